//! `pipelines/biosses_hoc.yaml --profile smoke` end to end on the corpus fixtures: BIOSSES
//! regression and HoC multi-label fine-tuning, their evaluation and the report; a second
//! run reruns nothing.

mod common;

use common::{pipe, pipeline_with_fixtures, text};

#[test]
fn biosses_hoc_smoke_runs_end_to_end_and_renders_both_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = pipeline_with_fixtures("biosses_hoc.yaml");
    std::fs::write(dir.path().join("biosses_hoc.yaml"), &yaml).expect("write");
    let out = pipe(
        dir.path(),
        &[
            "run",
            "biosses_hoc.yaml",
            "--profile",
            "smoke",
            "--jobs",
            "2",
        ],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("failed 0, skipped 0"), "{log}");

    let report = std::fs::read_to_string(dir.path().join("reports/biosses_hoc/report.md"))
        .expect("published report");
    // every cell has a number (one seed: no spread), none is "not run"
    for row in [
        "| fine-tuned, regression head |",
        "| fine-tuned, multi-label head |",
    ] {
        let line = report
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("{row} missing:\n{report}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 6, "{line}");
        for c in &cells[2..5] {
            assert!(
                c.chars()
                    .next()
                    .is_some_and(|ch| ch.is_ascii_digit() || ch == '-'),
                "{row}: cell `{c}` is not a number:\n{report}"
            );
        }
    }
    assert!(report.contains("### `biosses_corpus`"), "{report}");

    let again = pipe(
        dir.path(),
        &["run", "biosses_hoc.yaml", "--profile", "smoke"],
    );
    assert!(text(&again).contains("ran 0,"), "{}", text(&again));
}
