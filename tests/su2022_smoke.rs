//! A user's session with the main study, pipelines/su2022.yaml, at the `smoke` profile:
//! the real pipeline file (corpus and PubMed sources pointed at the committed fixture
//! slices), a tiny BERT with the real MiniLM tokenizer, every stage kind of the study from
//! fetch through sub-domain pre-training, fine-tuning, probing and attention analysis to
//! the report; then a change to one sub-domain's pre-training reruns only what descends
//! from it.

mod common;

use common::{pipe, pipeline_with_fixtures, render_from_a_pull, text};

#[test]
fn su2022_smoke_runs_the_whole_study_and_reruns_only_what_a_change_touches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = pipeline_with_fixtures("su2022.yaml");
    std::fs::write(dir.path().join("su2022.yaml"), &yaml).expect("write");

    let out = pipe(
        dir.path(),
        &["run", "su2022.yaml", "--profile", "smoke", "--jobs", "2"],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("failed 0, skipped 0"), "{log}");
    assert!(log.contains("published report → reports/su2022"), "{log}");

    let report = std::fs::read_to_string(dir.path().join("reports/su2022/report.md"))
        .expect("published report");
    for heading in [
        "## Table 1",
        "## Table 2",
        "## Sub-domain corpora and continued pre-training",
        "## Table 4",
        "## Table 5",
        "## Table 6",
        "## Table 7",
        "## What the seeds say: paired differences",
        "## The paper's claims, checked",
        "## Figure 1",
        "## Table 8",
        "## Figure 2",
    ] {
        assert!(report.contains(heading), "{heading} missing:\n{report}");
    }
    // Table 6: the paper's BioBERT SLL-Att (+CP) PPI cell beside our +CP row.
    let cp_row = report
        .lines()
        .find(|l| l.starts_with("| +CP SLL-Att"))
        .expect("+CP SLL-Att row");
    assert!(cp_row.contains("82.5 / 84.2 / 83.3"), "{cp_row}");
    assert!(
        !cp_row.starts_with("| +CP SLL-Att | —["),
        "+CP ran: {cp_row}"
    );
    // Paired differences: the smoke grid has seed 1 of CLS, SLL-Att and +CP SLL-Att, so
    // those rows have one pair per task; +P/G did not run.
    for row in ["| SLL-Att − CLS |", "| +CP SLL-Att − base SLL-Att |"] {
        let line = report
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("{row} missing:\n{report}"));
        assert_eq!(line.matches("(1 run)").count(), 3, "{line}");
    }
    // The claims: one seed judges nothing; +P/G (DDI's "hurts" claim) did not run.
    let att_claim = report
        .lines()
        .find(|l| l.contains("(SLL-Att − CLS, Table 5)"))
        .expect("SLL-Att claim");
    assert_eq!(
        att_claim.matches("one seed: no spread to judge by").count(),
        3,
        "{att_claim}"
    );
    let pg_claim = report
        .lines()
        .skip_while(|l| !l.contains("'protein/gene' text actually hurts"))
        .nth(1)
        .expect("+P/G claim");
    assert!(pg_claim.contains("not run yet"), "{pg_claim}");
    // the same verdicts at a glance, a row per claim and a column per task
    let glance = report
        .lines()
        .find(|l| l.starts_with("| SLL-Att − CLS (Table 5; higher) |"))
        .expect("at-a-glance row");
    assert_eq!(
        glance.matches("one seed: no spread to judge by").count(),
        3,
        "{glance}"
    );
    assert!(report.contains("| +P/G − base, CLS, on DDI (lower) | · | not run yet | · |"));
    let pg_pairs = report
        .lines()
        .find(|l| l.starts_with("| +P/G SLL-Att − base SLL-Att |"))
        .expect("+P/G paired row");
    assert!(!pg_pairs.contains("(1 run)"), "{pg_pairs}");
    // Table 2: the checkpoint the profile compares, with numbers
    let minilm_row = report
        .lines()
        .find(|l| l.starts_with("| all-MiniLM-L6-v2 |"))
        .expect("Table 2 row");
    assert_eq!(
        minilm_row.matches(" / ").count(),
        6,
        "P / R / F1 per task: {minilm_row}"
    );
    assert!(!minilm_row.contains("—["), "{minilm_row}");
    // continued pre-training with next-sentence prediction: both accuracies, before → after
    let pre_row = report
        .lines()
        .find(|l| l.starts_with("| +CP |") && l.contains(" × "))
        .expect("+CP pre-training row");
    assert_eq!(pre_row.matches(" → ").count(), 3, "{pre_row}");
    assert!(!pre_row.contains("off"), "NSP is on: {pre_row}");
    // +P/G is not in the smoke profile: its cells say so.
    let pg_row = report
        .lines()
        .find(|l| l.starts_with("| +P/G SLL-Att"))
        .expect("+P/G row");
    assert!(pg_row.contains("—["), "{pg_row}");
    // Figure 1 has a Δ^L per task, Table 8 our stems beside the paper's.
    let probe_row = report
        .lines()
        .find(|l| l.starts_with("| ChemProt |") && l.contains(" · "))
        .expect("ChemProt probe row with α profile");
    assert!(!probe_row.contains("—["), "{probe_row}");
    assert!(
        report.contains("phosphoryl, attenu, stimul"),
        "paper's stems"
    );
    assert!(dir
        .path()
        .join("reports/su2022/su2022_fig1_delta_last.svg")
        .is_file());

    // Nothing reruns.
    let plan = text(&pipe(
        dir.path(),
        &["plan", "su2022.yaml", "--profile", "smoke"],
    ));
    assert!(plan.contains("0 to run"), "{plan}");

    // A results remote that leaves the models and splits out (over --max-size) still
    // carries their summaries: a fresh cache renders the corpus and pre-training rows
    // from a pull, without computing anything.
    render_from_a_pull(dir.path(), "su2022.yaml", "64KiB", "pulled");
    let plan = text(&pipe(
        dir.path(),
        &[
            "--cache",
            "fresh",
            "plan",
            "su2022.yaml",
            "--profile",
            "smoke",
        ],
    ));
    assert!(
        plan.lines()
            .any(|l| l.starts_with("run ") && l.contains("pretrained[domain=cp]")),
        "the model was left out of the remote:\n{plan}"
    );
    let pulled = std::fs::read_to_string(dir.path().join("pulled/report.md")).expect("report");
    let pulled_pre_row = pulled
        .lines()
        .find(|l| l.starts_with("| +CP |") && l.contains(" × "))
        .unwrap_or_else(|| panic!("+CP pre-training row after a pull:\n{pulled}"));
    assert_eq!(pulled_pre_row, pre_row);
    // Table 1: the corpus counts, from the splits' summaries
    for task in ["| PPI (AIMed", "| DDI |", "| ChemProt |"] {
        let row = |r: &str| r.lines().find(|l| l.starts_with(task)).map(str::to_string);
        let counted = row(&report).unwrap_or_else(|| panic!("{task} missing:\n{report}"));
        assert!(!counted.contains("—["), "{counted}");
        assert_eq!(row(&pulled), Some(counted), "{task} after a pull");
    }

    // More pre-training for +D only: +D's pre-training and what descends from it rerun.
    // (The variant's params beat every profile's, so it sets `head_warmup` too: with
    // cpu_head_warmup's 100 of 4 steps the file would not load.)
    std::fs::write(
        dir.path().join("su2022.yaml"),
        yaml.replace(
            "domain: {pg: {}, d: {}, cp: {}}",
            "domain: {pg: {}, d: {steps: 4, head_warmup: 0}, cp: {}}",
        ),
    )
    .expect("write");
    let plan = text(&pipe(
        dir.path(),
        &["plan", "su2022.yaml", "--profile", "smoke"],
    ));
    let to_run: Vec<&str> = plan.lines().filter(|l| l.starts_with("run ")).collect();
    assert!(
        to_run.iter().any(
            |l| l.contains("pretrained[domain=d]") && l.contains("param `steps` changed 3 → 4")
        ),
        "{plan}"
    );
    assert!(
        to_run
            .iter()
            .all(|l| l.contains("domain=d") || l.contains("report")),
        "only +D's descendants rerun:\n{plan}"
    );
    assert!(
        to_run.iter().any(|l| l.contains("ft_ppi_sub[domain=d,")),
        "{plan}"
    );
}
