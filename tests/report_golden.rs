//! Golden-file tests of report rendering. Result rows come from hand-written fixture
//! `metrics.json` / `history.json` / `stats.json` files under `tests/fixtures/report/results/`
//! (indexed by `rows.json`), rendered with the committed templates (`reports/templates/`)
//! and paper numbers (`reports/references.yaml`); the markdown must equal the committed
//! golden file. `UPDATE_GOLDEN=1 cargo test --release --test report_golden` rewrites them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use pipe::report::{
    diff_metrics, render, render_diff_markdown, NoteKind, Provenance, References, ResultRow,
    TemplateSource,
};
use pipe::stages::report::{ReportParams, ReportStage, TemplateParam};
use pipe::stages::{InputArtifact, Inputs, Progress, Stage, StageCtx};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report")
}

/// `(input, stage, key, coords, dir)` of each fixture result, as in `rows.json`.
fn fixture_index() -> Vec<(String, InputArtifact)> {
    let text = std::fs::read_to_string(fixtures().join("rows.json")).unwrap();
    let index: Vec<Value> = serde_json::from_str(&text).unwrap();
    index
        .iter()
        .map(|r| {
            let coords: BTreeMap<String, Value> =
                serde_json::from_value(r["coords"].clone()).unwrap();
            let artifact = InputArtifact {
                stage: r["stage"].as_str().unwrap().to_string(),
                key: pipe::hash::StageKey::from_hex(r["key"].as_str().unwrap()),
                coords: coords.into(),
                path: fixtures().join(r["dir"].as_str().unwrap()),
            };
            (r["input"].as_str().unwrap().to_string(), artifact)
        })
        .collect()
}

fn fixture_rows() -> Vec<ResultRow> {
    fixture_index()
        .into_iter()
        .map(|(input, a)| {
            ResultRow::load(&input, &a.stage, &a.key_hex(), a.coords.to_map(), &a.path).unwrap()
        })
        .collect()
}

fn provenance() -> Provenance {
    Provenance {
        pipeline: "pipelines/su2020.yaml".into(),
        profile: Some("cpu".into()),
        pipe_commit: "0123456789ab (fixture)".into(),
        backend: "flex / cpu".into(),
        precision: None,
    }
}

fn references() -> References {
    References::load(Path::new("reports/references.yaml")).unwrap()
}

/// Compares `actual` with the golden file `name` (or rewrites it with UPDATE_GOLDEN=1).
fn check_golden(name: &str, actual: &str) {
    let path = fixtures().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        println!("rewrote {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 once)", path.display()));
    if expected != actual {
        let first_diff = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the rendered report at line {}:\n  golden: {:?}\n  actual: {:?}",
            path.display(),
            first_diff + 1,
            expected.lines().nth(first_diff),
            actual.lines().nth(first_diff)
        );
    }
}

fn su2020_template() -> TemplateSource {
    TemplateSource::file("reports/templates/su2020.md.j2").with_var("seeds", 2.into())
}

#[test]
fn su2020_report_matches_golden() {
    let tmp = tempfile::tempdir().unwrap();
    // REPORT_GOLDEN_OUT=DIR keeps the rendered plots there, to look at them.
    let out = std::env::var_os("REPORT_GOLDEN_OUT").map_or(tmp.path().to_path_buf(), PathBuf::from);
    let rendered = render(
        &su2020_template(),
        &fixture_rows(),
        &references(),
        &provenance(),
        &out,
    )
    .unwrap();
    check_golden("su2020.golden.md", &rendered.markdown);

    // Plots: training loss and dev F1 per task, one line per head, as SVG files linked
    // from the markdown.
    let names: Vec<String> = rendered
        .plots
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "su2020_ppi_f1_by_head.svg",
            "su2020_ddi_f1_by_head.svg",
            "su2020_chemprot_f1_by_head.svg",
            "su2020_ppi_train_loss.svg",
            "su2020_ppi_dev_f1.svg",
            "su2020_ddi_train_loss.svg",
            "su2020_ddi_dev_f1.svg",
            "su2020_chemprot_train_loss.svg",
            "su2020_chemprot_dev_f1.svg",
        ]
    );
    for (name, path) in names.iter().zip(&rendered.plots) {
        assert!(
            rendered.markdown.contains(&format!("]({name})")),
            "{name} not linked"
        );
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(svg.starts_with("<svg"), "{name}");
        let drawn = if name.contains("by_head") {
            "<rect"
        } else {
            "<polyline"
        };
        assert!(svg.contains(drawn), "{name}");
    }
    let ddi = std::fs::read_to_string(out.join("su2020_ddi_dev_f1.svg")).unwrap();
    assert!(
        ddi.contains("head=cls (mean over seed)") && ddi.contains("head=sll_att (mean over seed)")
    );
}

#[test]
fn missing_cells_render_as_a_dash_with_a_footnote_never_zero() {
    let out = tempfile::tempdir().unwrap();
    let rendered = render(
        &su2020_template(),
        &fixture_rows(),
        &references(),
        &provenance(),
        out.path(),
    )
    .unwrap();
    let md = &rendered.markdown;
    // No sll_lstm result exists for DDI: its row shows "—" with a footnote saying so.
    let row = md
        .lines()
        .find(|l| l.starts_with("| `sll_lstm`"))
        .expect("the sll_lstm row of Table III");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // cells: "", head, PPI ours, paper, Δ, DDI ours, paper, Δ, ...
    let ddi_ours = cells[5];
    assert!(ddi_ours.starts_with("—[^"), "{row}");
    let number = &ddi_ours["—[^".len()..ddi_ours.len() - 1];
    let definition = format!("[^{number}]: No result for `task=ddi, head=sll_lstm`: its stage");
    assert!(md.contains(&definition), "no footnote `{definition}`");
    assert!(!row.contains(" 0.0 "), "{row}");
    // Its Δ points at the same footnote; the paper's value is still shown.
    assert_eq!(cells[7], ddi_ours);
    assert_eq!(cells[6], "79.4 / 78.0 / 78.7");
    // ChemProt cls has one of the two expected seeds: a number with a footnote.
    let cls = md.lines().find(|l| l.starts_with("| `cls`")).unwrap();
    let chemprot = cls.split('|').map(str::trim).nth(8).unwrap();
    assert!(
        chemprot.contains("[^") && chemprot.starts_with("75."),
        "{chemprot}"
    );
    assert!(md.contains("Mean over 1 of 2 expected results for `task=chemprot, head=cls`"));
    // The report lists which cells have no result.
    let missing = rendered.missing_results();
    assert!(missing
        .iter()
        .any(|m| m.contains("task=ddi, head=sll_lstm")));
    assert!(rendered
        .footnotes
        .iter()
        .all(|n| n.kind != NoteKind::MissingResult || n.text.starts_with("No ")));
}

#[test]
fn template_errors_name_the_template_file_and_line() {
    let out = tempfile::tempdir().unwrap();
    let rows = fixture_rows();
    let refs = references();
    let dir = fixtures().join("templates");
    let error = |name: &str| {
        render(
            &TemplateSource::file(dir.join(name)),
            &rows,
            &refs,
            &provenance(),
            out.path(),
        )
        .unwrap_err()
        .to_string()
    };

    let syntax = error("broken_syntax.md.j2");
    let at = format!("{}:5:", dir.join("broken_syntax.md.j2").display());
    assert!(syntax.starts_with(&at), "{syntax}");
    assert!(syntax.contains("endfo"), "{syntax}");

    let runtime = error("broken_cell.md.j2");
    let at = format!("{}:4:", dir.join("broken_cell.md.j2").display());
    assert!(runtime.starts_with(&at), "{runtime}");
    assert!(runtime.contains("differ in `head`"), "{runtime}");
    assert!(
        runtime.contains("All heads:"),
        "the offending line is quoted: {runtime}"
    );

    let included = error("includes_broken.md.j2");
    let at = format!("{}:2:", dir.join("broken_partial.md.j2").display());
    assert!(included.starts_with(&at), "{included}");
    assert!(included.contains("no_such_function"), "{included}");

    println!("{syntax}\n{runtime}\n{included}");
    let inline = render(
        &TemplateSource::inline("report (inline template)", "ok\n{{ cell(rows, metric=) }}"),
        &rows,
        &refs,
        &provenance(),
        out.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        inline.starts_with("report (inline template):2:"),
        "{inline}"
    );
}

#[test]
fn quickstart_report_matches_golden() {
    let out = tempfile::tempdir().unwrap();
    let rows: Vec<ResultRow> = fixture_rows()
        .into_iter()
        .filter(|r| r.input == "corpus" || r.coords["task"] == "ddi")
        .collect();
    let rendered = render(
        &TemplateSource::file("reports/templates/quickstart.md.j2"),
        &rows,
        &References::empty(),
        &provenance(),
        out.path(),
    )
    .unwrap();
    check_golden("quickstart.golden.md", &rendered.markdown);
    assert_eq!(rendered.plots.len(), 8);
}

#[test]
fn report_stage_renders_its_bound_inputs() {
    let out = tempfile::tempdir().unwrap();
    let mut by_name: BTreeMap<String, Vec<InputArtifact>> = BTreeMap::new();
    for (input, artifact) in fixture_index() {
        by_name.entry(input).or_default().push(artifact);
    }
    let mut ctx = StageCtx {
        name: "report".into(),
        key: "k".into(),
        coords: BTreeMap::new(),
        inputs: Inputs { by_name },
        out_dir: out.path().to_path_buf(),
        scratch: out.path().join("scratch"),
        checkpoint_dir: out.path().join("checkpoint"),
        progress: Progress::hidden(),
        device: "cpu".into(),
        cancel: Arc::new(AtomicBool::new(false)),
        run: Default::default(),
    };
    let params: ReportParams = serde_json::from_value(serde_json::json!({
        "template": "su2020.md.j2",
        "references": "reports/references.yaml",
        "title": "Fixture run",
        "vars": {"seeds": 2},
        "output": "su2020.md",
    }))
    .unwrap();
    assert_eq!(params.template, TemplateParam::Path("su2020.md.j2".into()));
    ReportStage::check(&params).unwrap();
    let fingerprint = ReportStage::fingerprint(&params).unwrap();
    assert!(fingerprint.is_some());
    ReportStage::run(&mut ctx, &params).unwrap();
    let md = std::fs::read_to_string(out.path().join("su2020.md")).unwrap();
    assert!(md.starts_with("# Fixture run\n"), "{}", &md[..60]);
    // The same report as `render` gives for these rows (the provenance differs: the stage
    // knows less about the run than `pipe report`).
    let direct = render(
        &su2020_template().with_var("title", "Fixture run".into()),
        &fixture_rows(),
        &references(),
        &provenance(),
        &out.path().join("direct"),
    )
    .unwrap();
    let body = |s: &str| {
        s.split("## Provenance")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(body(&md), body(&direct.markdown));
    assert!(md.contains("| backend / device | flex / cpu |"), "{md}");
    assert!(out.path().join("su2020_ddi_dev_f1.svg").is_file());

    // An inline template, on the same inputs.
    let inline: ReportParams = serde_json::from_value(serde_json::json!({
        "template": {"inline": "{{ cell(rows, input='results', task='ddi', head='cls') }}\n"},
        "output": "inline.md",
    }))
    .unwrap();
    ReportStage::check(&inline).unwrap();
    let inline_dir = out.path().join("inline");
    std::fs::create_dir_all(&inline_dir).unwrap();
    ctx.out_dir = inline_dir.clone();
    ReportStage::run(&mut ctx, &inline).unwrap();
    let text = std::fs::read_to_string(inline_dir.join("inline.md")).unwrap();
    assert!(text.starts_with("76.6 ± 0.2\n"), "{text}");

    let bad: ReportParams = serde_json::from_value(serde_json::json!({
        "template": "no_such.md.j2",
    }))
    .unwrap();
    let err = ReportStage::check(&bad).unwrap_err().to_string();
    assert!(err.contains("no template file `no_such.md.j2`"), "{err}");
    let unknown = serde_json::from_value::<ReportParams>(serde_json::json!({
        "template": "su2020.md.j2", "tempalte": "x"
    }));
    assert!(unknown.is_err());
}

#[test]
fn diff_lists_the_changed_cells() {
    let a = fixture_rows();
    let mut b = fixture_rows();
    // Run B: DDI cls seed 1 rescored (another key), ChemProt cls absent.
    let i = b
        .iter()
        .position(|r| r.stage == "evaluate[head=cls,seed=1,task=ddi]")
        .unwrap();
    b[i].key = "another-key".into();
    b[i].metrics["f1"] = 0.5.into();
    b.retain(|r| r.stage != "evaluate[head=cls,seed=1,task=chemprot]");
    let changes = diff_metrics(&a, &b);
    let md = render_diff_markdown(&changes, "cpu", "paper");
    check_golden("diff.golden.md", &md);
    assert!(changes.iter().any(|c| c.metric == "f1" && c.b == Some(0.5)));
    assert!(changes.iter().all(|c| c.metric != "tp"));
}

/// The papers' templates judge every claim with the one `verdict` of
/// `reports/templates/claims.j2`: the claimed sign decides confirmed or refuted; a spread
/// wider than the mean is noise, which a claim of no change expects.
#[test]
fn one_verdict_macro_judges_each_claimed_sign() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("reports/templates/claims.j2", dir.path().join("claims.j2")).unwrap();
    // Two seeds of a pair of models whose difference changes sign: +10 and −5 points; and
    // of a pair that is higher twice, +3 and +1: the mean (2) lies beyond one std (1.4) but
    // t = 2 on one degree of freedom has p = 0.15.
    let mut rows = fixture_rows();
    for (model, seed, f1) in [
        ("a", 1, 0.50),
        ("b", 1, 0.40),
        ("a", 2, 0.40),
        ("b", 2, 0.45),
        ("c", 1, 0.43),
        ("d", 1, 0.40),
        ("c", 2, 0.41),
        ("d", 2, 0.40),
    ] {
        let result = dir.path().join(format!("{model}-{seed}"));
        std::fs::create_dir(&result).unwrap();
        std::fs::write(result.join("metrics.json"), format!("{{\"f1\": {f1}}}")).unwrap();
        let coords = BTreeMap::from([
            ("model".to_string(), Value::from(model)),
            ("seed".to_string(), Value::from(seed)),
        ]);
        rows.push(ResultRow::load("noisy", "eval", "k", coords, &result).unwrap());
    }
    let template = dir.path().join("claims_test.md.j2");
    std::fs::write(
        &template,
        r#"{% from "claims.j2" import verdict %}
{%- set ddi = paired(select(rows, input="results", task="ddi", head="sll_att"), select(rows, input="results", task="ddi", head="cls")) %}
{%- set noisy = paired(select(rows, input="noisy", model="a"), select(rows, input="noisy", model="b")) %}
higher: {{ verdict(ddi) }}
lower: {{ verdict(ddi, sign=-1) }}
no change: {{ verdict(ddi, sign=0) }}
in a table: {{ verdict(ddi, show=false) }}
noisy: {{ verdict(noisy) }}
noisy, no change: {{ verdict(noisy, sign=0) }}
one seed: {{ verdict(paired(select(rows, input="ppi", head="sll_att"), select(rows, input="ppi", head="cls"))) }}
twice higher, not beyond chance: {{ verdict(paired(select(rows, input="noisy", model="c"), select(rows, input="noisy", model="d"))) }}
"#,
    )
    .unwrap();
    let rendered = render(
        &TemplateSource::file(&template),
        &rows,
        &references(),
        &provenance(),
        dir.path(),
    )
    .unwrap();
    let lines: Vec<&str> = rendered.markdown.lines().take(8).collect();
    assert_eq!(
        lines,
        [
            "higher: **confirmed** (p = 0.003), +3.7 ± 0.0 (higher in 2 of 2)",
            "lower: **refuted** (p = 0.003), +3.7 ± 0.0 (higher in 2 of 2)",
            "no change: **refuted** (p = 0.006), +3.7 ± 0.0 (higher in 2 of 2)",
            "in a table: **confirmed** (p = 0.003)",
            "noisy: inside the seeds' noise (p = 0.40), +2.5 ± 10.6 (higher in 1 of 2)",
            "noisy, no change: inside the seeds' noise, as claimed (p = 0.80), +2.5 ± 10.6 (higher in 1 of 2)",
            "one seed: +1.7 (1 run), one seed: no spread to judge by",
            "twice higher, not beyond chance: inside the seeds' noise (p = 0.15), +2.0 ± 1.4 (higher in 2 of 2)",
        ]
    );
}
