//! `pipelines/peng2020.yaml --profile smoke` end to end on the corpus fixtures: single-task
//! relation and NER fine-tuning, a four-task multi-task model, its encoder fine-tuned again
//! per task, the pairwise grid (without encoders) and the report; a second run reruns
//! nothing, and changing one task's head in the grid reruns only the cells with that task.

mod common;

use common::{pipe, pipeline_with_fixtures, text};

#[test]
fn peng2020_smoke_runs_end_to_end_and_reruns_only_what_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = pipeline_with_fixtures("peng2020.yaml");
    std::fs::write(dir.path().join("peng2020.yaml"), &yaml).expect("write");

    let out = pipe(
        dir.path(),
        &["run", "peng2020.yaml", "--profile", "smoke", "--jobs", "2"],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("failed 0, skipped 0"), "{log}");
    // the NER baseline trains on sentences, the multi-task model on all four tasks
    assert!(log.contains("head token"), "{log}");
    assert!(log.contains("task bc5cdr_disease (token)"), "{log}");

    // a grid cell keeps its scores and heads, not its encoder (`save_model: false`), so it
    // is small enough for a results remote; the four-task model keeps `model/` for
    // MT-Fine-Tune
    let files_of = |stage: &str| {
        let out = pipe(
            dir.path(),
            &["show", "peng2020.yaml", stage, "--profile", "smoke"],
        );
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let pair = files_of("pair[pair=chemprot+bc5cdr_chemical,seed=1]");
    assert!(
        pair.contains("tasks/chemprot/metrics.json") && !pair.contains("model/"),
        "{pair}"
    );
    let mt_all = files_of("mt_all[seed=1]");
    assert!(mt_all.contains("model/config.json"), "{mt_all}");

    let report = std::fs::read_to_string(dir.path().join("reports/peng2020/report.md"))
        .expect("published report");
    assert!(report.contains("## Table 3"), "{report}");
    // the paper's BlueBERT ChemProt and BC5CDR-chemical cells, as printed
    assert!(
        report.contains("| 0.725 |") && report.contains("| 0.935 |"),
        "{report}"
    );
    assert!(
        report.contains("\n\n## Multi-task against single-task"),
        "{report}"
    );
    let refinement = report
        .lines()
        .find(|l| l.starts_with("| MT-Refinement (one model"))
        .expect("MT-Refinement row");
    assert!(
        !refinement.contains("—["),
        "every task has a score: {refinement}"
    );
    // the grid: ChemProt with BC5CDR-chemical was run, ChemProt with DDI was not
    let chemprot_row = report
        .lines()
        .find(|l| l.starts_with("| ChemProt |"))
        .expect("grid row");
    let cells: Vec<&str> = chemprot_row.split('|').map(str::trim).collect();
    // | ChemProt | ChemProt | DDI | BC5CDR disease | BC5CDR chemical |
    assert_eq!(cells[2], "·", "{chemprot_row}");
    assert_eq!(cells[3], "—", "{chemprot_row}");
    assert!(
        cells[5].contains("(1 run)") || cells[5].starts_with('+') || cells[5].starts_with('−'),
        "{chemprot_row}"
    );

    // the improves/hurts graph: a node per task, an arrow per direction of each pair run
    assert!(report.contains("![Which task helps which"), "{report}");
    let svg = std::fs::read_to_string(dir.path().join("reports/peng2020/pairwise.svg"))
        .expect("graph published beside the report");
    assert_eq!(svg.matches("<circle").count(), 4);
    assert_eq!(
        svg.matches("marker-end=").count(),
        4,
        "2 pairs, both directions"
    );

    let plan = text(&pipe(
        dir.path(),
        &["plan", "peng2020.yaml", "--profile", "smoke"],
    ));
    assert!(plan.contains("0 to run"), "{plan}");

    // a CRF for BC5CDR-disease in the grid: only the grid cell with that task reruns
    let changed = yaml.replace(
        "ddi+bc5cdr_disease: {tasks: {ddi: {head: cls}, bc5cdr_disease: {head: token}}}",
        "ddi+bc5cdr_disease: {tasks: {ddi: {head: cls}, bc5cdr_disease: {head: token_crf}}}",
    );
    assert_ne!(changed, yaml, "the smoke grid names the pair");
    std::fs::write(dir.path().join("peng2020.yaml"), &changed).expect("write");
    let plan = text(&pipe(
        dir.path(),
        &["plan", "peng2020.yaml", "--profile", "smoke"],
    ));
    // the stage column of each line the plan runs
    let to_run: Vec<&str> = plan
        .lines()
        .filter(|l| l.starts_with("run "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        to_run,
        ["pair[pair=ddi+bc5cdr_disease,seed=1]", "report"],
        "{plan}"
    );
}

#[test]
fn a_multitask_stage_with_inputs_and_tasks_that_do_not_match_fails_at_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = pipeline_with_fixtures("peng2020.yaml");
    let cases = [
        // a task with no input of its name
        (
            "bc5cdr_chemical: &ner {head: token}",
            "bc5cdr_chemical: &ner {head: token}\n        bc2gm: {head: token}",
            "`tasks` names `bc2gm`, which `inputs:` does not bind",
        ),
        // a relation head on an NER split
        (
            "bc5cdr_disease: *ner\n",
            "bc5cdr_disease: *re\n",
            "is for NER (token tagging)",
        ),
        // an input no task of the stage names
        (
            "        bc5cdr_disease: *ner\n",
            "",
            "input `bc5cdr_disease` is named under `tasks` by no cell",
        ),
    ];
    for (from, to, expected) in cases {
        let bad = yaml.replacen(from, to, 1);
        assert_ne!(bad, yaml, "{from}");
        std::fs::write(dir.path().join("bad.yaml"), &bad).expect("write");
        let out = pipe(dir.path(), &["plan", "bad.yaml", "--profile", "smoke"]);
        let log = text(&out);
        assert_eq!(out.status.code(), Some(2), "{log}");
        assert!(log.contains(expected), "{expected}: {log}");
        assert!(log.contains("bad.yaml:"), "names the file and line: {log}");
    }
}
