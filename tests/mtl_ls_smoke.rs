//! `pipelines/mtl_ls.yaml --profile smoke` end to end on the NER fixtures: per entity
//! class, single-task CRF taggers, a multi-task model over the class's data sets (MTL-XC)
//! and layer-sliced models (MTL-LS) at several rates; the report's tables. A second plan
//! finds everything cached, and changing one rate of the matrix runs only that rate's cells.

mod common;

use common::{pipe, pipeline_with_fixtures, render_from_a_pull, text};

#[test]
fn mtl_ls_smoke_runs_end_to_end_and_a_new_rate_runs_only_its_cells() {
    let dir = tempfile::tempdir().expect("tempdir");
    // the fixtures slice a few data sets of each class: keep only the smoke profile (`plan`
    // checks every profile, and `cpu` names every data set)
    let full = pipeline_with_fixtures("mtl_ls.yaml");
    let yaml = full[..full.find("\n  cpu:").expect("a cpu profile")].to_string() + "\n";
    std::fs::write(dir.path().join("mtl_ls.yaml"), &yaml).expect("write");

    let out = pipe(
        dir.path(),
        &["run", "mtl_ls.yaml", "--profile", "smoke", "--jobs", "2"],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("failed 0, skipped 0"), "{log}");
    // MTL-XC takes its tasks from the split family, one per `dataset` cell
    assert!(
        log.contains("task ncbi_disease (token_crf)") && log.contains("task linnaeus (token_crf)"),
        "{log}"
    );
    // the tiny encoder has 2 layers: rate 0.5 shares layer 1, rate 0 only the embeddings
    assert!(
        log.contains(
            "slicing rate 0.5: embeddings and layer 1 shared (from `shared_from`), layer 2 per task"
        ),
        "{log}"
    );
    assert!(
        log.contains("slicing rate 0: embeddings and no encoder layer shared"),
        "{log}"
    );

    let report = std::fs::read_to_string(dir.path().join("reports/mtl-ls/report.md"))
        .expect("published report");
    // label unification: each data set's own types, under its class
    assert!(
        report.contains("| disease | ncbi_disease | Disease |"),
        "{report}"
    );
    assert!(
        report.contains("| species | linnaeus | Species |"),
        "{report}"
    );
    // Table 2: every cell of the rates run has a number, the rate not run a dash
    // the data set's rows: label unification, Table 1, Table 2, the dev-chosen rate
    let row = report
        .lines()
        .filter(|l| l.starts_with("| disease | bc5cdr_disease |"))
        .nth(2)
        .expect("Table 2 row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | class | data set | STL | MTL-XC | 0.0 | 0.5 | 1.0 |
    assert_eq!(cells.len(), 9, "{row}");
    for cell in &cells[3..8] {
        assert!(cell.parse::<f64>().is_ok(), "{row}");
    }
    assert!(
        report.contains("paper: MTL-LS − STL") && report.contains("| 0.90 |"),
        "the paper's BC5CDR-disease gain beside ours: {report}"
    );
    assert!(dir.path().join("reports/mtl-ls/slicing.svg").exists());

    // The MTL-XC models (their shared encoders) stay out of a remote with --max-size; the
    // report reads their scores through summaries, so a pulled cache renders Table 2 whole.
    let pushed = render_from_a_pull(dir.path(), "mtl_ls.yaml", "64KiB", "pulled");
    assert!(pushed.contains("over --max-size"), "{pushed}");
    assert!(!pushed.contains("hint: a report reads"), "{pushed}");
    let pulled = std::fs::read_to_string(dir.path().join("pulled/report.md")).expect("report");
    let pulled_row = pulled
        .lines()
        .filter(|l| l.starts_with("| disease | bc5cdr_disease |"))
        .nth(2);
    assert_eq!(pulled_row, Some(row), "Table 2 after a pull");

    let out = pipe(
        dir.path(),
        &["plan", "mtl_ls.yaml", "--profile", "smoke", "--json"],
    );
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    let stages: serde_json::Value = serde_json::from_str(&plan).expect("plan --json");
    let stages = stages.as_array().expect("a list of stages");
    assert!(
        stages.iter().all(|s| s["status"] == "cached"),
        "everything cached after the run: {plan}"
    );
    assert!(
        stages
            .iter()
            .any(|s| s["stage"] == "ls_disease[seed=1,slicing=0.5]"),
        "{plan}"
    );

    // a new rate for the disease class: only its cell (and the report) run
    let changed = yaml.replace(
        "ls_disease: {matrix: {slicing: [0.0, 0.5, 1.0], seed: [1]}}",
        "ls_disease: {matrix: {slicing: [0.0, 0.5, 0.75, 1.0], seed: [1]}}",
    );
    assert_ne!(changed, yaml, "the smoke profile's disease rates");
    std::fs::write(dir.path().join("mtl_ls.yaml"), &changed).expect("write");
    let out = pipe(
        dir.path(),
        &["run", "mtl_ls.yaml", "--profile", "smoke", "--jobs", "2"],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("ls_disease[seed=1,slicing=0.75]"), "{log}");
    assert!(
        log.contains("ran 2, cached"),
        "the new cell and the report: {log}"
    );
}
