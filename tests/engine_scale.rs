//! The engine on generated pipelines of thousands of stages: every stage planned, in an
//! order where inputs come first, each reading the right upstream result. (Speed lives in
//! `pipe bench engine`, not here.)

use std::fmt::Write as _;
use std::path::Path;

use pipe::cache::Cache;
use pipe::exec::{plan, PlanOptions, RunReason, Status};
use pipe::graph::StageGraph;
use pipe::pipeline::{load_pipeline, Pipeline};
use pipe::stages::StageRegistry;

fn load(dir: &Path, yaml: &str) -> (Pipeline, StageGraph, Cache) {
    let file = dir.join("p.yaml");
    std::fs::write(&file, yaml).expect("write pipeline");
    let p = load_pipeline(&file, None, &StageRegistry::builtin()).expect("pipeline loads");
    let g = StageGraph::build(&p).expect("no cycle");
    let cache = Cache::open(&dir.join("cache")).expect("cache opens");
    (p, g, cache)
}

fn options() -> PlanOptions {
    PlanOptions {
        backend: "cpu".into(),
        ..PlanOptions::default()
    }
}

#[test]
fn a_5000_stage_chain_plans_every_stage_after_the_one_it_reads() {
    const N: usize = 5000;
    let dir = tempfile::tempdir().expect("tempdir");
    // written last stage first: neither file order nor name order (s10 < s9) is chain order
    let mut yaml = String::from("stages:\n");
    for i in (0..N).rev() {
        write!(
            yaml,
            "  s{i}:\n    kind: shell\n    params:\n      cmd: \"echo {i} > o\"\n      outs: [o]\n"
        )
        .expect("write to string");
        if i > 0 {
            writeln!(yaml, "    inputs:\n      up: s{}", i - 1).expect("write to string");
        }
    }
    let (p, g, cache) = load(dir.path(), &yaml);
    let plan = plan(&p, &g, &cache, &options()).expect("plans");

    let names: Vec<&str> = plan
        .items
        .iter()
        .map(|it| p.instances[it.instance].name.as_str())
        .collect();
    let expected: Vec<String> = (0..N).map(|i| format!("s{i}")).collect();
    assert_eq!(names, expected, "every stage, in chain order");
    let mut keys = std::collections::BTreeSet::new();
    for (i, it) in plan.items.iter().enumerate() {
        assert_eq!(it.status, Status::Run, "{}", names[i]);
        assert_eq!(*it.reasons, [RunReason::New], "{}", names[i]);
        assert!(keys.insert(it.key), "{} has a key of its own", names[i]);
        let material = plan.material(&p, it.instance);
        assert_eq!(material.key(), it.key, "{}", names[i]);
        if i == 0 {
            assert!(material.inputs.is_empty());
        } else {
            let up = &material.inputs["up"];
            assert_eq!(up, &vec![plan.items[i - 1].key.hex()], "{}", names[i]);
            let stages = plan.input_stages(&p, it.instance);
            assert_eq!(stages["up"], vec![names[i - 1].to_string()]);
        }
    }
}

#[test]
fn a_matrix_reading_a_matrix_binds_cell_to_cell_and_a_table_reads_every_cell() {
    const K: usize = 1500;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "stages:\n  prep:\n    kind: shell\n    params: {{cmd: \"echo $I > o\", outs: [o]}}\n    \
         matrix: {{env.I: {{range: {K}}}, env.PART: [a, b]}}\n  \
         train:\n    kind: shell\n    params: {{cmd: \"cat $PIPE_IN_UP > o\", outs: [o]}}\n    \
         matrix: {{env.I: {{range: {K}}}}}\n    inputs: {{up: \"prep[env.PART=b]\"}}\n  \
         table:\n    kind: shell\n    params: {{cmd: \"cat $PIPE_IN_UP_LIST > o\", outs: [o]}}\n    \
         inputs: {{up: train}}\n"
    );
    let (p, g, cache) = load(dir.path(), &yaml);
    assert_eq!(p.instances.len(), 3 * K + 1);
    for i in p.select("train") {
        let me = &p.instances[i];
        let bound: Vec<&str> = me.inputs["up"]
            .iter()
            .map(|r| p.instances[r.instance].name.as_str())
            .collect();
        let cell = me.coords["env.I"].to_string();
        assert_eq!(
            bound,
            [format!("prep[env.I={cell},env.PART=b]")],
            "{}",
            me.name
        );
    }
    let table = p.select("table")[0];
    let read: Vec<usize> = p.instances[table].inputs["up"]
        .iter()
        .map(|r| r.instance)
        .collect();
    assert_eq!(
        read,
        p.select("train"),
        "the table reads every cell, in order"
    );

    let plan = plan(&p, &g, &cache, &options()).expect("plans");
    assert_eq!(plan.items.len(), 3 * K + 1);
    let at: Vec<usize> = (0..p.instances.len())
        .map(|i| plan.by_instance[i])
        .collect();
    for (i, inst) in p.instances.iter().enumerate() {
        for r in inst.inputs.values().flatten() {
            assert!(
                at[r.instance] < at[i],
                "{} planned before its input",
                inst.name
            );
        }
    }
}

/// `pipe` in `dir` with its cache there and phase timings on (they say which load ran).
fn pipe_timed(dir: &Path, args: &[&str]) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(args)
        .current_dir(dir)
        .env("PIPE_CACHE", dir.join("cache"))
        .env("PIPE_TIMINGS", "1")
        .output()
        .expect("run pipe");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "pipe {args:?}: {stdout}{stderr}");
    (stdout, stderr)
}

const READ_BACK: &str = "load: stored expansion read";

/// `(stage, status)` of every row of `pipe plan --json`.
fn statuses(plan_json: &str) -> Vec<(String, String)> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(plan_json).expect("plan --json");
    rows.iter()
        .map(|r| {
            (
                r["stage"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn an_unchanged_large_pipeline_is_read_back_and_any_change_to_what_it_was_made_of_is_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("t.yaml"),
        "templates:\n  echo:\n    kind: shell\n    params: {cmd: \"echo $I > o\", outs: [o]}\n",
    )
    .expect("write include");
    std::fs::write(d.join("dep.txt"), "one").expect("write dep");
    // 1,100 cells from an included template, a stage whose `deps:` file is read at plan
    // time, a table reading every cell
    let yaml = "include: [t.yaml]\nstages:\n  cell:\n    template: echo\n    \
                matrix: {env.I: {range: 1100}}\n  dep:\n    kind: shell\n    \
                params: {cmd: \"echo dep > o\", outs: [o], deps: [dep.txt]}\n  \
                table:\n    kind: shell\n    params: {cmd: \"cat $PIPE_IN_UP_LIST > o\", outs: [o]}\n    \
                inputs: {up: cell}\n";
    std::fs::write(d.join("p.yaml"), yaml).expect("write pipeline");

    let (_, timings) = pipe_timed(d, &["run", "p.yaml", "--quiet"]);
    assert!(
        !timings.contains(READ_BACK),
        "nothing stored yet: {timings}"
    );
    let (plan, timings) = pipe_timed(d, &["plan", "p.yaml", "--json"]);
    assert!(timings.contains(READ_BACK), "{timings}");
    let rows = statuses(&plan);
    assert_eq!(rows.len(), 1102);
    assert!(rows.iter().all(|(_, s)| s == "cached"), "{rows:?}");
    // the same plan as a full load gives, key for key
    std::fs::remove_dir_all(d.join("cache/expanded")).expect("drop the records");
    let (full, timings) = pipe_timed(d, &["plan", "p.yaml", "--json"]);
    assert!(!timings.contains(READ_BACK), "{timings}");
    assert_eq!(full, plan);

    // a file read at plan time changed: the record is still used, the stage runs again
    std::fs::write(d.join("dep.txt"), "two").expect("change dep");
    let (plan, timings) = pipe_timed(d, &["plan", "p.yaml", "--json"]);
    assert!(timings.contains(READ_BACK), "{timings}");
    let to_run: Vec<String> = statuses(&plan)
        .into_iter()
        .filter(|(_, s)| s == "run")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(to_run, ["dep"]);

    // the included template changed: a full load, and every cell runs again
    std::fs::write(
        d.join("t.yaml"),
        "templates:\n  echo:\n    kind: shell\n    params: {cmd: \"echo $I! > o\", outs: [o]}\n",
    )
    .expect("change include");
    let (plan, timings) = pipe_timed(d, &["plan", "p.yaml", "--json"]);
    assert!(!timings.contains(READ_BACK), "{timings}");
    let rows = statuses(&plan);
    assert_eq!(rows.iter().filter(|(_, s)| s == "run").count(), 1102);

    // a damaged record is a miss, never an error or a wrong plan: one command changed in
    // place (still valid JSON), then the record cut in half
    let (again, timings) = pipe_timed(d, &["plan", "p.yaml", "--json"]);
    assert!(timings.contains(READ_BACK), "{timings}");
    assert_eq!(again, plan);
    for record in std::fs::read_dir(d.join("cache/expanded")).expect("records") {
        let path = record.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read record");
        std::fs::write(&path, text.replacen("echo $I!", "echo $I?", 1)).expect("edit record");
    }
    let (edited, timings) = pipe_timed(d, &["plan", "p.yaml", "--json"]);
    assert!(!timings.contains(READ_BACK), "{timings}");
    assert_eq!(edited, plan);
    for record in std::fs::read_dir(d.join("cache/expanded")).expect("records") {
        let path = record.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read record");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate record");
    }
    let (damaged, timings) = pipe_timed(d, &["plan", "p.yaml", "--json"]);
    assert!(!timings.contains(READ_BACK), "{timings}");
    assert_eq!(damaged, plan);

    // the pipeline itself changed (one cell's command): a full load, that one stage runs
    std::fs::write(d.join("p.yaml"), yaml.replace("range: 1100", "range: 1101"))
        .expect("edit pipeline");
    let (plan, timings) = pipe_timed(d, &["plan", "p.yaml", "--json"]);
    assert!(!timings.contains(READ_BACK), "{timings}");
    assert_eq!(statuses(&plan).len(), 1103);
}

/// Workers make their stages' input views side by side: 60 results, each read by 4 stages
/// that become ready together and start at once (`--jobs 4`), so that several workers ask
/// for the same view while it is being built (each reader's command differs, or they would
/// be one key run once). Every stage runs and reads its producer's file; a second run
/// finds all of them cached.
#[test]
fn stages_that_read_one_result_at_once_each_get_its_view() {
    const ROOTS: usize = 60;
    const READERS: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut yaml = String::from("stages:\n");
    for r in 0..ROOTS {
        write!(
            yaml,
            "  r{r}:\n    kind: shell\n    params:\n      cmd: \"echo {r} > o\"\n      outs: [o]\n"
        )
        .expect("write");
        for k in 0..READERS {
            write!(
                yaml,
                "  r{r}_{k}:\n    kind: shell\n    params:\n      cmd: \"cat $PIPE_IN_UP/o > o; echo {k} >> o\"\n      outs: [o]\n    inputs:\n      up: [r{r}]\n"
            )
            .expect("write");
        }
    }
    std::fs::write(dir.path().join("p.yaml"), yaml).expect("write pipeline");
    let (out, _) = pipe_timed(dir.path(), &["run", "--jobs", "4", "p.yaml"]);
    let stages = ROOTS * (READERS + 1);
    assert!(
        out.contains(&format!("ran {stages}, cached 0")),
        "every stage runs: {out}"
    );
    let (again, _) = pipe_timed(dir.path(), &["show", "p.yaml", "r59_3", "o"]);
    assert_eq!(
        again.trim(),
        "59\n3",
        "the reader copied its producer's file"
    );
    let (noop, _) = pipe_timed(dir.path(), &["run", "p.yaml"]);
    assert!(noop.contains(&format!("ran 0, cached {stages}")), "{noop}");
}
