//! A user's session with the su2020 pipeline at the `smoke` profile: the real
//! pipeline file (its corpus sources pointed at the committed fixture slices), a tiny
//! BERT with the real MiniLM tokenizer, every stage kind from fetch to report.

mod common;

use common::{pipe, pipeline_with_fixtures, text};

#[test]
fn su2020_smoke_runs_end_to_end_and_reruns_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `profiles:` closes the file: a profile that changes DDI's fine-tuning lr alone
    let yaml = pipeline_with_fixtures("su2020.yaml")
        + "  smoke_lr:\n    extends: smoke\n    ft_ddi: {lr: 3.0e-3}\n";
    std::fs::write(dir.path().join("su2020.yaml"), yaml).expect("write");

    let plan = text(&pipe(
        dir.path(),
        &["plan", "su2020.yaml", "--profile", "smoke"],
    ));
    assert!(
        plan.contains("ft_ppi[fold=1,head=sll_att,seed=1]"),
        "{plan}"
    );
    assert!(plan.contains("to run, 0 cached"), "{plan}");

    let out = pipe(
        dir.path(),
        &["run", "su2020.yaml", "--profile", "smoke", "--jobs", "2"],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("failed 0, skipped 0"), "{log}");
    assert!(log.contains("published report → reports/su2020"), "{log}");

    // The report has our (smoke) numbers beside the paper's, and "—" for heads not run.
    let report = std::fs::read_to_string(dir.path().join("reports/su2020/report.md"))
        .expect("published report");
    assert!(report.contains("## Table III"), "{report}");
    assert!(
        report.contains("79.0 / 83.3 / 81.0"),
        "paper's BioBERT CLS PPI cell"
    );
    let cls_row = report
        .lines()
        .find(|l| l.starts_with("| `cls`"))
        .expect("cls row");
    assert!(
        !cls_row.contains("—["),
        "cls was run for every task: {cls_row}"
    );
    let lstm_row = report
        .lines()
        .find(|l| l.starts_with("| `sll_lstm`"))
        .expect("sll_lstm row");
    assert!(
        lstm_row.contains("—["),
        "sll_lstm was not run at smoke: {lstm_row}"
    );
    assert!(
        report.contains("| pipeline | `su2020.yaml` |"),
        "provenance names the run"
    );
    assert!(
        report.contains("| profile | `smoke` |"),
        "provenance names the profile"
    );

    // Nothing reruns; the plan says so.
    let again = text(&pipe(
        dir.path(),
        &["run", "su2020.yaml", "--profile", "smoke"],
    ));
    assert!(again.contains("ran 0,"), "{again}");
    let stats = pipe(
        dir.path(),
        &[
            "stats",
            "su2020.yaml",
            "--profile",
            "smoke",
            "chemprot",
            "--json",
        ],
    );
    let counts: serde_json::Value =
        serde_json::from_slice(&stats.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&stats)));
    let train: u64 = counts["train"]
        .as_object()
        .expect("train counts")
        .values()
        .map(|v| v.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(train, 40, "smoke caps each split at 40 instances");

    // Two profiles compared: only DDI's cells differ, each seed paired with its twin
    let other = pipe(
        dir.path(),
        &["run", "su2020.yaml", "-p", "smoke_lr", "--only", "eval_ddi"],
    );
    assert!(other.status.success(), "{}", text(&other));
    let diff = text(&pipe(
        dir.path(),
        &[
            "diff",
            "su2020.yaml",
            "smoke",
            "smoke_lr",
            "--over",
            "seed",
            "--metric",
            "f1",
        ],
    ));
    assert!(
        diff.contains(
            "| input | cell | metric | smoke | smoke_lr | smoke_lr − smoke, paired by seed | p |"
        ),
        "{diff}"
    );
    let rows: Vec<&str> = diff.lines().filter(|l| l.starts_with("| eval_")).collect();
    assert_eq!(rows.len(), 2, "{diff}");
    for (row, head) in rows.iter().zip(["head=cls", "head=sll_att"]) {
        assert!(
            row.starts_with(&format!("| eval_ddi | {head} | f1 | "))
                && row.ends_with(" (1 run) | — |"),
            "{diff}"
        );
    }
    let unknown = pipe(
        dir.path(),
        &["diff", "su2020.yaml", "smoke", "smoke_lr", "--metric", "F1"],
    );
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("no metric `F1` in either profile's results (there are: "),
        "{}",
        text(&unknown)
    );

    // Training results are cached per backend: read with the device they ran on, they
    // show; read for another device, `show` says why they would rerun.
    let cell = "ft_ddi[head=cls,seed=1]";
    let cpu = pipe(
        dir.path(),
        &["show", "su2020.yaml", cell, "--profile", "smoke"],
    );
    assert!(cpu.status.success(), "{}", text(&cpu));
    let gpu = text(&pipe(
        dir.path(),
        &[
            "show",
            "su2020.yaml",
            cell,
            "--profile",
            "smoke",
            "--device",
            "cuda:0",
        ],
    ));
    assert!(gpu.contains("is not cached"), "{gpu}");
    assert!(gpu.contains("backend changed flex → cuda"), "{gpu}");
}
