//! `pipelines/meng2019.yaml --profile smoke` end to end on the corpus fixtures: UD English
//! EWT trees and SemEval-2010 Task 8 pairs, the five rows of Table 1 (frozen and fine-tuned,
//! emb and emb+att, MST), the sentence heads on SemEval, and the report; a second plan runs
//! nothing. Also: `pipe stats --json` counts of the fixture corpora, and of the full
//! corpora against their SOURCE.md when `../shared/data` is there.

mod common;

use common::{pipe, pipeline_with_fixtures, render_from_a_pull, text};

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

#[test]
fn meng2019_smoke_runs_end_to_end_and_then_everything_is_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = pipeline_with_fixtures("meng2019.yaml");
    std::fs::write(dir.path().join("meng2019.yaml"), &yaml).expect("write");

    let out = pipe(
        dir.path(),
        &["run", "meng2019.yaml", "--profile", "smoke", "--jobs", "2"],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("failed 0, skipped 0"), "{log}");
    assert!(
        log.contains("head word_pair (emb_att, frozen encoder)"),
        "{log}"
    );
    assert!(log.contains("frozen encoder features of"), "{log}");

    // the parsing cells' evaluate outputs hold uas and las
    for stage in [
        "eval_parse_fea_emb[seed=1]",
        "eval_parse_ft_att[seed=1]",
        "eval_parse_ft_att_mst[seed=1]",
    ] {
        let out = pipe(
            dir.path(),
            &[
                "show",
                "meng2019.yaml",
                stage,
                "metrics.json",
                "--profile",
                "smoke",
            ],
        );
        let shown = text(&out);
        assert!(out.status.success(), "{shown}");
        assert!(
            shown.contains("\"uas\"") && shown.contains("\"las\""),
            "{stage}: {shown}"
        );
    }

    let report = std::fs::read_to_string(dir.path().join("reports/meng2019/report.md"))
        .expect("published report");
    assert!(report.contains("## Table 1"), "{report}");
    // the paper's fea:emb+att and fine-tune:emb+att (MST) cells, as printed
    assert!(
        report.contains("| 77.2 |") && report.contains("| 90.9 |"),
        "{report}"
    );
    assert!(report.contains("punctuation"), "{report}");
    // the heat map of one parsed sentence, copied next to the report
    let image = report
        .lines()
        .find(|l| l.starts_with("![attention between the words"))
        .unwrap_or_else(|| panic!("no heat map embedded:\n{report}"));
    let file = image
        .rsplit_once("](")
        .and_then(|(_, f)| f.strip_suffix(')'))
        .expect("an image link");
    let svg = std::fs::read_to_string(dir.path().join("reports/meng2019").join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert!(
        svg.contains("heads right:") && svg.contains("<circle"),
        "{svg}"
    );

    // A results remote that leaves the parsers out (over --max-size) carries the heat map
    // in the parser's summary: a fresh cache pulled from it renders the same figure.
    // the smoke parser's result is ~21 KiB, its summary (the heat map) ~10 KiB
    let pushed = render_from_a_pull(dir.path(), "meng2019.yaml", "16KiB", "pulled");
    assert!(pushed.contains("over --max-size"), "{pushed}");
    assert!(!pushed.contains("hint: a report reads"), "{pushed}");
    let pulled = std::fs::read_to_string(dir.path().join("pulled").join(file))
        .unwrap_or_else(|e| panic!("the heat map after a pull: {e}"));
    assert_eq!(pulled, svg);

    let plan = pipe(
        dir.path(),
        &["plan", "meng2019.yaml", "--profile", "smoke", "--json"],
    );
    let plan_json = json_of(&plan);
    let rows = plan_json.as_array().expect("a JSON array");
    assert!(rows.len() > 20, "{plan_json}");
    for row in rows {
        assert_eq!(
            row["status"], "cached",
            "every stage cached after the run: {row}"
        );
    }

    // the fixture slices' counts
    let stats = pipe(
        dir.path(),
        &[
            "stats",
            "meng2019.yaml",
            "semeval_corpus",
            "--profile",
            "smoke",
            "--json",
        ],
    );
    let s = json_of(&stats);
    let total = |split: &str| -> u64 {
        s[split]
            .as_object()
            .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
            .unwrap_or(0)
    };
    assert_eq!((total("train"), total("test")), (40, 30), "{s}");
}

/// The corpus stage's params of `name` in `stages/corpora.yaml`.
fn template_spec(name: &str) -> pipe::data::CorpusSpec {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("stages/corpora.yaml")).expect("corpora.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    serde_yaml::from_value(doc["templates"][name]["params"].clone()).expect("corpus params")
}

/// The full corpora, counted as their SOURCE.md files count them (skipped without
/// `../shared/data`).
#[test]
fn full_corpora_counts_match_their_source_files() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = repo.join("../shared/data");
    if !data.join("semeval2010t8").is_dir() || !data.join("ud-english-ewt").is_dir() {
        println!("skipped: ../shared/data/{{semeval2010t8,ud-english-ewt}} not found");
        return;
    }
    let semeval = pipe::data::corpus::build(
        &template_spec("semeval2010t8_corpus"),
        &data.join("semeval2010t8"),
    )
    .expect("SemEval corpus");
    let stats = semeval.stats();
    let total = |split: &str| stats.counts[split].values().sum::<u64>();
    assert_eq!((total("train"), total("test")), (8000, 2717));
    assert_eq!(stats.counts["train"].len(), 19, "19 directed labels");
    assert_eq!(stats.counts["train"]["Other"], 1410);
    assert_eq!(stats.counts["test"]["Other"], 454);
    assert_eq!(stats.counts["train"]["Cause-Effect(e2,e1)"], 659);
    assert_eq!(stats.counts["test"]["Entity-Destination(e2,e1)"], 1);
    assert_eq!(stats.counts["test"]["Product-Producer(e2,e1)"], 123);

    let ewt = pipe::data::corpus::build(&template_spec("ewt_corpus"), &data.join("ud-english-ewt"))
        .expect("EWT corpus");
    let stats = ewt.stats();
    for (split, sentences, words) in [
        ("train", 12544, 204577),
        ("dev", 2001, 25147),
        ("test", 2077, 25094),
    ] {
        assert_eq!(stats.sentences[split], sentences, "{split}");
        assert_eq!(stats.tokens[split], words, "{split}");
    }
    assert_eq!(ewt.labels.labels.len(), 51, "DEPREL labels used");
}
