//! The engine as a user meets it: `pipe run` / `plan` / `dag` / `cache` on small
//! pipelines of `shell` stages, asserting on what a user sees.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::text as both;

/// A scratch project: a dir with pipeline files and its own cache.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Self {
        Project {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pipe"));
        c.args(args)
            .current_dir(self.path())
            .env("PIPE_CACHE", self.path().join("cache"))
            .env_remove("PIPE_MIRROR");
        c
    }
    fn pipe(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run pipe")
    }
    /// Runs and asserts success; returns stdout + stderr.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.pipe(args);
        let text = both(&out);
        assert!(out.status.success(), "pipe {args:?} failed:\n{text}");
        text
    }
    /// `pipe plan --json` rows as (stage, status, reason).
    fn plan(&self, file: &str) -> Vec<(String, String, String)> {
        let out = self.ok(&["plan", file, "--json"]);
        let json_start = out.find('[').expect("json array");
        let rows: serde_json::Value =
            serde_json::from_str(&out[json_start..]).expect("plan --json parses");
        rows.as_array()
            .expect("array")
            .iter()
            .map(|r| {
                (
                    r["stage"].as_str().unwrap_or_default().to_string(),
                    r["status"].as_str().unwrap_or_default().to_string(),
                    r["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
    fn status_of(&self, file: &str, stage: &str) -> (String, String) {
        self.plan(file)
            .into_iter()
            .find(|(s, _, _)| s == stage)
            .map(|(_, st, r)| (st, r))
            .unwrap_or_else(|| panic!("stage {stage} not in plan"))
    }
}

/// a -> b -> c, and an independent d.
const CHAIN: &str = r#"
stages:
  a:
    kind: shell
    params:
      cmd: echo alpha > a.txt
      outs: [a.txt]
  b:
    kind: shell
    inputs:
      src: a.a.txt
    params:
      cmd: tr a-z A-Z < "$PIPE_IN_SRC" > "$PIPE_OUT/b.txt"
  c:
    kind: shell
    inputs:
      up: b
    params:
      cmd: cat "$PIPE_IN_UP/b.txt" "$PIPE_IN_UP/b.txt" > "$PIPE_OUT/c.txt"
  d:
    kind: shell
    params:
      cmd: echo delta > "$PIPE_OUT/d.txt"
"#;

#[test]
fn rerun_after_param_edit_runs_only_that_stage_and_descendants() {
    let p = Project::new();
    p.write("p.yaml", CHAIN);
    let first = p.ok(&["run", "p.yaml"]);
    assert!(
        first.contains("ran 4, cached 0, failed 0, skipped 0"),
        "{first}"
    );
    let second = p.ok(&["run", "p.yaml"]);
    assert!(second.contains("ran 0, cached 4"), "{second}");

    p.write("p.yaml", &CHAIN.replace("tr a-z A-Z", "tr a-z B-Z"));
    let plan = p.plan("p.yaml");
    let status: Vec<(&str, &str)> = plan
        .iter()
        .map(|(s, st, _)| (s.as_str(), st.as_str()))
        .collect();
    assert!(status.contains(&("a", "cached")));
    assert!(status.contains(&("b", "run")));
    assert!(status.contains(&("c", "run")));
    assert!(status.contains(&("d", "cached")));
    let (_, why_b) = p.status_of("p.yaml", "b");
    assert!(
        why_b.contains("param `cmd` changed")
            && why_b.contains("tr a-z A-Z")
            && why_b.contains("tr a-z B-Z"),
        "{why_b}"
    );
    let (_, why_c) = p.status_of("p.yaml", "c");
    assert_eq!(why_c, "input `up` changed (b)");

    let third = p.ok(&["run", "p.yaml"]);
    assert!(third.contains("ran 2, cached 2"), "{third}");
    assert!(third.contains("✓ b") && third.contains("✓ c"), "{third}");
    assert!(!third.contains("✓ a") && !third.contains("✓ d"), "{third}");
    // each end line counts the stages this run computes: c needs b, so b ends first
    let ended: Vec<&str> = third.lines().filter(|l| l.starts_with('✓')).collect();
    assert_eq!(ended.len(), 2, "{third}");
    assert!(
        ended[0].starts_with("✓ b (") && ended[0].ends_with(" [1/2]"),
        "{third}"
    );
    assert!(
        ended[1].starts_with("✓ c (") && ended[1].ends_with(" [2/2]"),
        "{third}"
    );
}

#[test]
fn renaming_and_reordering_stages_invalidates_nothing() {
    let p = Project::new();
    p.write("p.yaml", CHAIN);
    p.ok(&["run", "p.yaml"]);
    // d renamed to zeta and moved to the top; keys come from content.
    let renamed = CHAIN
        .replace("  d:\n    kind: shell\n    params:\n      cmd: echo delta > \"$PIPE_OUT/d.txt\"\n", "")
        .replace(
            "stages:\n",
            "stages:\n  zeta:\n    kind: shell\n    params:\n      cmd: echo delta > \"$PIPE_OUT/d.txt\"\n",
        );
    p.write("p2.yaml", &renamed);
    let plan = p.plan("p2.yaml");
    assert_eq!(plan.len(), 4);
    assert!(plan.iter().all(|(_, st, _)| st == "cached"), "{plan:?}");
}

#[test]
fn plan_says_new_and_profile_changes_params() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!("{CHAIN}profiles:\n  loud:\n    a:\n      cmd: echo ALPHA > a.txt\n"),
    );
    let (st, why) = p.status_of("p.yaml", "a");
    assert_eq!((st.as_str(), why.as_str()), ("run", "new"));
    p.ok(&["run", "p.yaml"]);
    let out = p.ok(&["plan", "p.yaml", "--profile", "loud"]);
    assert!(
        out.contains("param `cmd` changed echo alpha > a.txt → echo ALPHA > a.txt"),
        "{out}"
    );
    assert!(out.contains("3 to run, 1 cached"), "{out}");
    let err = p.pipe(&["plan", "p.yaml", "--profile", "nope"]);
    assert!(!err.status.success());
    assert!(
        both(&err).contains("profile `nope` is not defined in this pipeline (defined: loud)"),
        "{}",
        both(&err)
    );
    p.write("bare.yaml", CHAIN);
    let err = p.pipe(&["plan", "bare.yaml", "--profile", "cpu"]);
    assert!(
        both(&err).contains("profile `cpu` is not defined in this pipeline (defined: none)"),
        "{}",
        both(&err)
    );
    let err = p.pipe(&["plan", "p.yaml", "--profile", "lod"]);
    assert!(
        both(&err).contains("profile `lod` is not defined in this pipeline (did you mean `loud`?)"),
        "{}",
        both(&err)
    );
}

#[test]
fn a_no_op_run_moves_each_last_run_back_after_another_profile_ran() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!("{CHAIN}profiles:\n  loud:\n    a:\n      cmd: echo ALPHA > a.txt\n"),
    );
    p.ok(&["run", "p.yaml"]);
    p.ok(&["run", "p.yaml"]); // a no-op: the records are vouched for by one digest
    p.ok(&["run", "p.yaml", "--profile", "loud"]);
    let back = p.ok(&["run", "p.yaml"]);
    assert!(back.contains("ran 0, cached 4"), "{back}");
    // `a`'s last run is the plain one again, not the loud one
    p.write(
        "p.yaml",
        &format!(
            "{}profiles:\n  loud:\n    a:\n      cmd: echo ALPHA > a.txt\n",
            CHAIN.replace("echo alpha", "echo Alpha")
        ),
    );
    let (_, why) = p.status_of("p.yaml", "a");
    assert!(
        why.contains("echo alpha > a.txt → echo Alpha > a.txt"),
        "{why}"
    );
    let again = p.ok(&["run", "p.yaml", "--profile", "loud"]);
    assert!(again.contains("ran 0, cached 4"), "{again}");
    let (_, why) = p.status_of("p.yaml", "a");
    assert!(
        why.contains("echo ALPHA > a.txt → echo Alpha > a.txt"),
        "{why}"
    );
}

#[test]
fn matrix_expands_and_family_input_collects_all_cells() {
    let p = Project::new();
    p.write(
        "m.yaml",
        r#"
stages:
  train:
    kind: shell
    params:
      cmd: echo "$HEAD-$SEED" > "$PIPE_OUT/score.txt"
    matrix:
      env.HEAD: [cls, att]
      env.SEED: {range: [1, 4]}
  summary:
    kind: shell
    inputs:
      runs: train
    params:
      cmd: for d in $(echo "$PIPE_IN_RUNS" | tr ':' ' '); do cat "$d/score.txt"; done | sort > "$PIPE_OUT/all.txt"
  per_head:
    kind: shell
    inputs:
      runs: train
    params:
      cmd: echo "$PIPE_IN_RUNS" | tr ':' '\n' | wc -l > "$PIPE_OUT/n.txt"
    matrix:
      env.HEAD: [cls, att]
"#,
    );
    let plan = p.plan("m.yaml");
    let names: Vec<&str> = plan.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(plan.len(), 6 + 1 + 2, "{names:?}");
    assert!(
        names.contains(&"train[env.HEAD=att,env.SEED=3]"),
        "{names:?}"
    );
    assert!(names.contains(&"per_head[env.HEAD=cls]"), "{names:?}");
    p.ok(&["run", "m.yaml", "--jobs", "3"]);
    let dag = p.ok(&["dag", "m.yaml", "--format", "dot"]);
    assert_eq!(dag.matches(" -> ").count(), 6 + 3 + 3, "{dag}");
    // Read the summary's output through the cache: rerun with a stage that copies it out.
    p.write(
        "m2.yaml",
        &(std::fs::read_to_string(p.path().join("m.yaml")).unwrap()
            + "  export:\n    kind: shell\n    inputs:\n      s: summary.all.txt\n      n: per_head\n    params:\n      cmd: cp \"$PIPE_IN_S\" \"$PIPE_PROJECT/all.txt\"; for d in $(echo \"$PIPE_IN_N\" | tr ':' ' '); do cat \"$d/n.txt\"; done > \"$PIPE_PROJECT/n.txt\"\n"),
    );
    let out = p.ok(&["run", "m2.yaml"]);
    assert!(out.contains("ran 1, cached 9"), "{out}");
    let all = std::fs::read_to_string(p.path().join("all.txt")).unwrap();
    assert_eq!(
        all.lines().collect::<Vec<_>>(),
        ["att-1", "att-2", "att-3", "cls-1", "cls-2", "cls-3"]
    );
    let n: Vec<String> = std::fs::read_to_string(p.path().join("n.txt"))
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(n, ["3", "3"], "each head binds to its 3 seeds");
}

#[test]
fn a_failing_stage_skips_descendants_but_not_independent_branches() {
    let p = Project::new();
    p.write(
        "f.yaml",
        r#"
stages:
  bad:
    kind: shell
    params:
      cmd: 'echo "first line"; echo "boom: the model diverged" >&2; exit 3'
  after_bad:
    kind: shell
    inputs:
      x: bad
    params:
      cmd: "true"
  good:
    kind: shell
    params:
      cmd: echo ok > "$PIPE_OUT/ok.txt"
"#,
    );
    let out = p.pipe(&["run", "f.yaml", "--jobs", "1"]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ran 1, cached 0, failed 1, skipped 1"),
        "{text}"
    );
    assert!(text.contains("boom: the model diverged"), "{text}");
    assert!(
        text.contains("after_bad skipped (upstream bad failed)"),
        "{text}"
    );
    // Nothing of the failed stage was cached; the good one was.
    let (st, _) = p.status_of("f.yaml", "bad");
    assert_eq!(st, "run");
    let (st, _) = p.status_of("f.yaml", "good");
    assert_eq!(st, "cached");
}

#[test]
fn undeclared_output_is_a_clear_failure() {
    let p = Project::new();
    p.write(
        "o.yaml",
        "stages:\n  s:\n    kind: shell\n    params:\n      cmd: \"true\"\n      outs: [model.bin]\n",
    );
    let out = p.pipe(&["run", "o.yaml"]);
    assert!(!out.status.success());
    assert!(
        both(&out).contains("declared output `model.bin` was not produced"),
        "{}",
        both(&out)
    );
}

#[test]
fn killed_run_leaves_cache_consistent_and_rerun_redoes_only_that_stage() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let p = Project::new();
    p.write(
        "k.yaml",
        r#"
stages:
  quick:
    kind: shell
    params:
      cmd: echo fast > "$PIPE_OUT/q.txt"
  slow:
    kind: shell
    inputs:
      q: quick
    params:
      cmd: echo partial > "$PIPE_OUT/part.txt"; sleep ${TEST_SLEEP:-0}; echo done > "$PIPE_OUT/done.txt"
"#,
    );
    let mut child = p
        .cmd(&["run", "k.yaml", "--jobs", "1"])
        .env("TEST_SLEEP", "30")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read");
        assert!(n > 0, "pipe exited before starting `slow`");
        if line.contains("▶ slow") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SIGKILL the whole process group (pipe and its shell) mid-stage.
    let pgid = child.id() as i32;
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();

    let (st, _) = p.status_of("k.yaml", "quick");
    assert_eq!(st, "cached");
    let (st, why) = p.status_of("k.yaml", "slow");
    assert_eq!((st.as_str(), why.as_str()), ("run", "new"));
    let out = p.ok(&["run", "k.yaml"]);
    assert!(out.contains("ran 1, cached 1"), "{out}");
    let verify = p.ok(&["cache", "verify"]);
    assert!(verify.contains("cache OK"), "{verify}");
}

#[test]
fn corrupt_blob_is_found_by_verify_and_its_stage_reruns() {
    let p = Project::new();
    p.write("p.yaml", CHAIN);
    p.ok(&["run", "p.yaml"]);
    // Find the blob holding d's output ("delta\n") and flip its content.
    let target = blake3::hash(b"delta\n").to_hex().to_string();
    let blob = p
        .path()
        .join("cache/blobs")
        .join(&target[..2])
        .join(&target);
    assert!(blob.exists(), "blob of d.txt stored by content hash");
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    std::fs::write(&blob, b"tampered\n").unwrap();

    let out = p.pipe(&["cache", "verify"]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("corrupt: d") && text.contains("d.txt"),
        "{text}"
    );
    let (st, why) = p.status_of("p.yaml", "d");
    assert_eq!(st, "run");
    assert!(why.contains("cached output was removed"), "{why}");
    let again = p.ok(&["run", "p.yaml"]);
    assert!(again.contains("ran 1, cached 3"), "{again}");
    assert!(p.ok(&["cache", "verify"]).contains("cache OK"));
}

#[test]
fn identical_outputs_are_stored_once_and_gc_frees_unreachable_results() {
    let p = Project::new();
    p.write(
        "g.yaml",
        r#"
stages:
  one:
    kind: shell
    params:
      cmd: echo same > "$PIPE_OUT/x.txt"
  two:
    kind: shell
    params:
      cmd: echo same > "$PIPE_OUT/x.txt"; true
"#,
    );
    p.ok(&["run", "g.yaml"]);
    let h = blake3::hash(b"same\n").to_hex().to_string();
    let dir = p.path().join("cache/blobs").join(&h[..2]);
    let copies = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy() == h)
        .count();
    assert_eq!(copies, 1);
    let ls = p.ok(&["cache", "ls"]);
    assert!(ls.contains("2 entries"), "{ls}");
    let header = ls.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("key ") && header.contains("stage") && header.ends_with("took"),
        "{ls}"
    );
    // Drop stage two from the pipeline; gc removes its entry.
    p.write(
        "g2.yaml",
        "stages:\n  one:\n    kind: shell\n    params:\n      cmd: echo same > \"$PIPE_OUT/x.txt\"\n",
    );
    let gc = p.ok(&["cache", "gc", "g2.yaml"]);
    assert!(gc.contains("removed 1 entries"), "{gc}");
    assert!(gc.contains("freed"), "{gc}");
    assert!(p.ok(&["cache", "ls"]).contains("1 entries"));
    let (st, _) = p.status_of("g2.yaml", "one");
    assert_eq!(st, "cached");
}

/// Ctrl-C (SIGINT) during a long stage: the run says it is stopping, stops the stage's
/// command (and what it started), keeps what finished, exits 4; the next run goes on.
#[test]
fn an_interrupted_run_stops_its_stages_and_keeps_what_finished() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  quick:\n    kind: shell\n    params: {cmd: echo hi > \"$PIPE_OUT/q.txt\"}\n  \
         slow:\n    kind: shell\n    inputs: {up: quick}\n    \
         params: {cmd: 'sleep 60 & echo $! > \"$PIPE_PROJECT/sleep.pid\"; wait; echo > \"$PIPE_OUT/s.txt\"'}\n  \
         then:\n    kind: shell\n    inputs: {up: quick}\n    \
         params: {cmd: echo > \"$PIPE_PROJECT/then.ran\"}\n  \
         down:\n    kind: shell\n    inputs: {up: slow}\n    params: {cmd: 'true'}\n",
    );
    let child = p
        .cmd(&["run", "p.yaml", "--jobs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = p.path().join("sleep.pid");
    let t0 = std::time::Instant::now();
    while !pid_file.exists() && t0.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let sleep_pid = std::fs::read_to_string(&pid_file).expect("the slow stage started");
    // SAFETY: a signal to the child this test started
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let t1 = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let text = both(&out);
    assert!(
        t1.elapsed().as_secs() < 10,
        "stopped at once, not after the sleep: {text}"
    );
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains("interrupted: stopping the 1 running stage(s)")
            && text.contains("■ slow stopped by the interrupt")
            && text.contains("every result finished before is cached"),
        "{text}"
    );
    // `then` waited queued beside `slow` (one job beyond --jobs): it never starts, and
    // nothing is reported skipped as if a stage had failed
    assert!(
        !text.contains("▶ then") && !p.path().join("then.ran").exists() && !text.contains('⊘'),
        "{text}"
    );
    // the command's own child goes too (reaped by init a moment after)
    let proc_entry = std::path::Path::new("/proc").join(sleep_pid.trim());
    let t2 = std::time::Instant::now();
    while proc_entry.exists() && t2.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !proc_entry.exists(),
        "`sleep 60` outlived the interrupted run"
    );
    let plan = p.ok(&["plan", "p.yaml"]);
    assert!(
        plan.contains("cached  quick")
            && plan.contains("run     slow")
            && plan.contains("run     then"),
        "{plan}"
    );
}

#[test]
fn a_second_run_on_the_same_cache_fails_clearly() {
    let p = Project::new();
    p.write(
        "s.yaml",
        "stages:\n  s:\n    kind: shell\n    params:\n      cmd: sleep 3\n",
    );
    let mut first = p
        .cmd(&["run", "s.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let second = p.pipe(&["run", "s.yaml"]);
    let text = both(&second);
    assert_eq!(second.status.code(), Some(3), "a busy cache exits 3");
    assert!(text.contains("is in use by another pipe process"), "{text}");
    assert!(first.wait().unwrap().success());
    assert!(p.ok(&["run", "s.yaml"]).contains("cached 1"));
}

#[test]
fn plan_and_report_read_a_cache_that_a_long_run_holds() {
    let p = Project::new();
    p.write(
        "s.yaml",
        "stages:\n  quick:\n    kind: shell\n    params: {cmd: echo hi > \"$PIPE_OUT/q.txt\"}\n  \
         slow:\n    kind: shell\n    inputs: {up: quick}\n    params: {cmd: sleep 4}\n  \
         summary:\n    kind: report\n    inputs: {q: quick, s: slow}\n    \
         params: {template: {inline: \"{{ rows | length }} results\"}}\n",
    );
    let mut first = p
        .cmd(&["run", "s.yaml", "--jobs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // `quick` is committed within a moment; `slow` runs for seconds
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let plan = p.pipe(&["plan", "s.yaml"]);
    let text = both(&plan);
    assert!(plan.status.success(), "{text}");
    assert!(text.contains("is in use by another pipe process"), "{text}");
    assert!(text.contains("cached  quick"), "{text}");
    assert!(text.contains("run     slow"), "{text}");
    let ls = both(&p.pipe(&["cache", "ls"]));
    assert!(ls.contains("1 entries"), "{ls}");
    // a reader builds its own views of what was committed and renders from them
    let report = p.pipe(&["report", "s.yaml", "-o", "early"]);
    assert!(report.status.success(), "{}", both(&report));
    assert!(p.path().join("early/report.md").is_file());
    // what would change the cache still waits for the holder
    let gc = p.pipe(&["cache", "gc", "s.yaml"]);
    assert!(!gc.status.success());
    assert!(first.wait().unwrap().success());
    let plan = p.ok(&["plan", "s.yaml"]);
    assert!(!plan.contains("in use"), "{plan}");
    assert!(plan.contains("cached  slow"), "{plan}");
}

/// `pipe stats` of a cached corpus reads while a long run holds the cache; one it would
/// have to compute says why it cannot now, and exits 3 as a busy cache does.
#[test]
fn stats_reads_a_cached_corpus_while_a_run_holds_the_cache() {
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    p.write("data/train.txt", "BRCA1\tB-Gene\nbinds\tO\n\np53\tB-Gene\n");
    p.write("data/test.txt", "TP53\tB-Gene\n");
    p.write(
        "s.yaml",
        "stages:\n  files:\n    kind: fetch\n    params: {source: \"path:data\"}\n  \
         corpus:\n    kind: corpus\n    inputs: {source: files}\n    \
         params: {format: conll, files: {train: train.txt}}\n  \
         later:\n    kind: corpus\n    inputs: {source: files}\n    \
         params: {format: conll, files: {train: test.txt}}\n  \
         slow:\n    kind: shell\n    params: {cmd: sleep 4}\n",
    );
    p.ok(&["run", "s.yaml", "--only", "corpus"]);
    let mut run = p
        .cmd(&["run", "s.yaml", "--only", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let stats = p.pipe(&["stats", "s.yaml", "corpus"]);
    let text = both(&stats);
    assert!(stats.status.success(), "{text}");
    assert!(text.contains("is in use by another pipe process"), "{text}");
    assert!(text.contains("train"), "{text}");
    let missing = p.pipe(&["stats", "s.yaml", "later"]);
    let text = both(&missing);
    assert_eq!(missing.status.code(), Some(3), "{text}");
    assert!(
        text.contains("`later` is not cached, so `pipe stats` must run it: the cache"),
        "{text}"
    );
    assert!(run.wait().unwrap().success());
    let later = p.ok(&["stats", "s.yaml", "later"]);
    assert!(later.contains("train"), "{later}");
}

#[test]
fn only_and_force_select_what_runs() {
    let p = Project::new();
    p.write("p.yaml", CHAIN);
    let out = p.ok(&["run", "p.yaml", "--only", "b"]);
    assert!(out.contains("ran 2, cached 0"), "{out}");
    let out = p.ok(&["run", "p.yaml", "--force", "b"]);
    // b and its descendant c are forced, d was never selected before, a is cached.
    assert!(out.contains("ran 3, cached 1"), "{out}");
    let (st, why) = {
        let o = p.ok(&["plan", "p.yaml", "--force", "a", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&o[o.find('[').unwrap()..]).unwrap();
        let row = v
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["stage"] == "c")
            .unwrap()
            .clone();
        (
            row["status"].as_str().unwrap().to_string(),
            row["reason"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!((st.as_str(), why.as_str()), ("run", "forced"));
}

#[test]
fn golden_key_is_stable_across_machines() {
    let p = Project::new();
    p.write(
        "k.yaml",
        "stages:\n  hello:\n    kind: shell\n    params:\n      cmd: echo hello > \"$PIPE_OUT/h.txt\"\n",
    );
    let out = p.ok(&["plan", "k.yaml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out[out.find('[').unwrap()..]).unwrap();
    assert_eq!(
        v[0]["key"],
        "570663fa6921273ec5809ca9b3149beea780afc8bc82670f884595e80ef12b73"
    );
}

/// Each user mistake: message names file:line:col and says what was expected.
#[test]
fn pipeline_errors_name_file_line_and_column() {
    let p = Project::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "bad_yaml.yaml",
            "stages:\n  a:\n    kind: shell\n   params: [\n",
            "bad_yaml.yaml:4:",
        ),
        (
            "unknown_kind.yaml",
            "stages:\n  a:\n    kind: shel\n    params:\n      cmd: x\n",
            "unknown_kind.yaml:3:5: unknown stage kind `shel` (did you mean `shell`?); known kinds: ",
        ),
        (
            "stage_not_a_mapping.yaml",
            "stages:\n  a: [shell]\n",
            "stage_not_a_mapping.yaml:2:6: stages.a: invalid type: sequence, expected a stage: a \
             mapping with `kind:`",
        ),
        (
            "unknown_profile.yaml",
            "stages:\n  a:\n    kind: shell\n    params: {cmd: x}\nprofiles:\n  base: {}\n  \
             ext: {extends: bsae}\n",
            "unknown_profile.yaml:7:3: profile `ext` extends `bsae`, which is not defined (did \
             you mean `base`?) (defined: base, ext)",
        ),
        (
            "unknown_param.yaml",
            "stages:\n  a:\n    kind: shell\n    params:\n      cmd: x\n      cmdd: y\n",
            "unknown_param.yaml:6:7: stage `a` (kind `shell`): param `cmdd`: unknown field `cmdd`",
        ),
        (
            "nested_param.yaml",
            "stages:\n  c:\n    kind: corpus\n    params:\n      format: tsv\n      files: {train: a.txt}\n      layout:\n        header: maybe\n",
            "nested_param.yaml:8:9: stage `c` (kind `corpus`): param `layout.header`: invalid type: string \"maybe\", expected a boolean",
        ),
        (
            "huge_matrix.yaml",
            "stages:\n  a:\n    kind: shell\n    params: {cmd: x}\n    matrix:\n      i: {range: 1000000000}\n      j: [1, 2]\n",
            "huge_matrix.yaml:5:5: stage `a` expands to 2000000000 cells (i: 1000000000 × j: 2)",
        ),
        (
            "twice.yaml",
            "stages:\n  a:\n    kind: shell\n    params: {cmd: x}\n  a:\n    kind: shell\n    params: {cmd: y}\n",
            "twice.yaml:5:3: stages: `a` is defined twice (first at line 2",
        ),
        ("empty.yaml", "", "empty.yaml:1:1: the pipeline defines no stages"),
        (
            "float_range.yaml",
            "stages:\n  a:\n    kind: shell\n    params: {cmd: x}\n    matrix:\n      i: {range: 1e9}\n",
            "a matrix axis is a list of values, `{range: N}` or `{range: [A, B]}` with integers (not `1e9`",
        ),
        (
            "unknown_key.yaml",
            "stages:\n  a:\n    kind: shell\n    parms:\n      cmd: x\n",
            "unknown_key.yaml:4:5: stages.a: unknown field `parms`",
        ),
        (
            "cycle.yaml",
            "stages:\n  a:\n    kind: shell\n    inputs: {x: b}\n    params: {cmd: x}\n  b:\n    kind: shell\n    inputs: {x: a}\n    params: {cmd: x}\n",
            "cycle: a -> b -> a",
        ),
        (
            "missing_input.yaml",
            "stages:\n  a:\n    kind: shell\n    inputs:\n      corpus: nope\n    params: {cmd: x}\n",
            "missing_input.yaml:5:7: input `corpus` of stage `a` refers to stage `nope`, which is not defined",
        ),
        (
            "bad_matrix.yaml",
            "stages:\n  a:\n    kind: shell\n    params: {cmd: x}\n    matrix:\n      lr: [1, 2]\n",
            "bad_matrix.yaml:6:7: matrix over param `lr`, which stage kind `shell` does not have",
        ),
    ];
    for (file, text, expected) in cases {
        p.write(file, text);
        let out = p.pipe(&["plan", file]);
        let msg = both(&out);
        assert_eq!(out.status.code(), Some(2), "{file}: a bad pipeline exits 2");
        assert!(
            msg.contains(expected),
            "{file}: expected `{expected}` in:\n{msg}"
        );
    }
}

#[test]
fn plan_checks_each_stage_against_its_kinds_inputs() {
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    p.write("data/train.txt", "BRCA1\tB-Gene\n");
    // fetch → corpus (a CoNLL NER corpus, or a relation one) → split → finetune → evaluate
    let pipeline = |corpus_params: &str, finetune_inputs: &str, evaluate: &str| {
        format!(
            "stages:\n  files:\n    kind: fetch\n    params: {{source: \"path:data\"}}\n  \
             model:\n    kind: fetch\n    params: {{source: \"path:data\"}}\n  corpus:\n    \
             kind: corpus\n    inputs: {{source: files}}\n    params: {corpus_params}\n  \
             split:\n    kind: split\n    inputs: {{corpus: corpus}}\n    params: {{method: \
             standard}}\n  ft:\n    kind: finetune\n    matrix: {{seed: [1, 2]}}\n    \
             params: {{head: cls}}\n    inputs:\n{finetune_inputs}{evaluate}"
        )
    };
    let ner = "{format: conll, files: {train: train.txt}}";
    let relation = "{format: blurb_tsv, files: {train: train.txt}, label2id: {a: 0}}";
    let good_inputs = "      data: split\n      model: model\n";
    let per_cell =
        "  eval:\n    kind: evaluate\n    foreach: [seed]\n    inputs: {predictions: ft}\n";
    let cases: &[(&str, String, &str)] = &[
        (
            "misspelt.yaml",
            pipeline(relation, "      dta: split\n      model: model\n", ""),
            "misspelt.yaml:21:7: stage `ft[seed=1]`: kind `finetune` has no input `dta`, did you \
             mean `data`?; its inputs: `data` (a split of a relation corpus, NER for token \
             heads, sentence pairs for `regression`, multi-label documents for `multilabel`), \
             `model` (a BERT checkpoint directory)",
        ),
        (
            "no_model.yaml",
            pipeline(relation, "      data: split\n", ""),
            "no_model.yaml:20:5: stage `ft[seed=1]`: kind `finetune` needs input `model` (a BERT \
             checkpoint directory), which `inputs:` does not bind",
        ),
        (
            "ner_split.yaml",
            pipeline(ner, good_inputs, ""),
            "ner_split.yaml:21:7: stage `ft[seed=1]`: input `data`: `split` is for NER (token \
             tagging) (corpus `corpus` has format `conll`), but this stage needs relation \
             classification",
        ),
        (
            "token_head_on_relations.yaml",
            pipeline(relation, good_inputs, "").replace("{head: cls}", "{head: token_crf}"),
            "token_head_on_relations.yaml:21:7: stage `ft[seed=1]`: input `data`: `split` is \
             for relation classification (corpus `corpus` has format `blurb_tsv`), but this \
             stage needs NER (token tagging)",
        ),
        (
            "two_runs.yaml",
            pipeline(
                relation,
                good_inputs,
                "  eval:\n    kind: evaluate\n    inputs:\n      predictions: ft\n",
            ),
            "two_runs.yaml:26:7: stage `eval`: input `predictions` takes one upstream result \
             (a fine-tuning's output (`predictions.jsonl`)), but binds 2: ft[seed=1], ft[seed=2]",
        ),
    ];
    for (file, text, expected) in cases {
        p.write(file, text);
        let out = p.pipe(&["plan", file]);
        let msg = both(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{file} should fail at plan:\n{text}"
        );
        assert!(
            msg.contains(expected),
            "{file}: expected `{expected}` in:\n{msg}"
        );
    }
    // the same pipeline with every input right plans (an evaluate per fine-tuning cell)
    p.write("right.yaml", &pipeline(relation, good_inputs, per_cell));
    let rows = p.plan("right.yaml");
    assert_eq!(rows.len(), 8, "{rows:?}");

    // A fine-tuning an earlier run left a checkpoint of (interrupted, killed): the plan
    // says it resumes, from the newest complete one.
    let json = p.ok(&["plan", "right.yaml", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json[json.find('[').unwrap()..]).unwrap();
    let key = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["stage"] == "ft[seed=1]")
        .and_then(|r| r["key"].as_str())
        .expect("ft[seed=1] planned")
        .to_string();
    let checkpoints = p.path().join("cache/checkpoints").join(&key);
    for done in ["epoch-2", "epoch-10"] {
        std::fs::create_dir_all(checkpoints.join(done)).unwrap();
        std::fs::write(checkpoints.join(done).join("state.json"), "{}").unwrap();
    }
    // a checkpoint being written (no state.json yet) is not one to resume from
    std::fs::create_dir_all(checkpoints.join("epoch-11")).unwrap();
    let (_, why) = p.status_of("right.yaml", "ft[seed=1]");
    assert_eq!(why, "new; resumes from its checkpoint `epoch-10`");
    let (_, why) = p.status_of("right.yaml", "ft[seed=2]");
    assert_eq!(why, "new");
}

#[test]
fn a_relative_cache_path_works_for_shell_stages() {
    let p = Project::new();
    p.write(
        "rel.yaml",
        "stages:\n  a:\n    kind: shell\n    params: {cmd: \"echo hi > $PIPE_OUT/out.txt\"}\n  b:\n    kind: shell\n    inputs: {up: a}\n    params: {cmd: \"cat $PIPE_IN_UP/out.txt > $PIPE_OUT/copy.txt\"}\n",
    );
    let out = p.ok(&["run", "rel.yaml", "--cache", "c1"]);
    assert!(out.contains("ran 2"), "{out}");
    let shown = p.ok(&["show", "rel.yaml", "b", "copy.txt", "--cache", "c1"]);
    assert!(shown.contains("hi"), "{shown}");
}

#[test]
fn a_fan_in_past_the_environment_limit_reads_its_inputs_from_a_list() {
    // 1,500 results: their paths joined pass Linux's 128 KiB cap on one environment string
    // (which once made `sh` fail to start)
    let p = Project::new();
    p.write(
        "fan.yaml",
        "stages:\n  cell:\n    kind: shell\n    params: {cmd: \"echo $N > $PIPE_OUT/n\"}\n    \
         matrix: {env.N: {range: 1500}}\n  all:\n    kind: shell\n    inputs: {up: cell}\n    \
         params: {cmd: \"test $PIPE_IN_UP_COUNT = 1500 && test -z \\\"$PIPE_IN_UP\\\" && \
         sed 's|$|/n|' $PIPE_IN_UP_LIST | xargs cat | sort -n | tail -1 > $PIPE_OUT/max\"}\n",
    );
    let out = p.ok(&["run", "fan.yaml", "--quiet"]);
    assert!(out.contains("ran 1501"), "{out}");
    let max = p.ok(&["show", "fan.yaml", "all", "max"]);
    assert!(max.contains("1499"), "{max}");
}

#[test]
fn forced_rerun_publishes_the_new_output_not_a_stale_view() {
    let p = Project::new();
    p.write(
        "f.yaml",
        "stages:\n  s:\n    kind: shell\n    params:\n      cmd: date +%s%N > \"$PIPE_OUT/t.txt\"\n    publish: out\n",
    );
    p.ok(&["run", "f.yaml"]);
    let first = std::fs::read_to_string(p.path().join("out/t.txt")).expect("published");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = p.ok(&["run", "f.yaml", "--force", "s"]);
    assert!(out.contains("published s → out"), "{out}");
    let second = std::fs::read_to_string(p.path().join("out/t.txt")).expect("published");
    assert_ne!(first, second, "the forced run's output is published");
}

#[test]
fn show_prints_a_cached_output_or_says_why_it_would_run() {
    let p = Project::new();
    p.write("p.yaml", CHAIN);
    p.ok(&["run", "p.yaml", "--only", "c"]);
    let listing = p.ok(&["show", "p.yaml", "c"]);
    assert!(listing.contains("c.txt"), "{listing}");
    let content = p.ok(&["show", "p.yaml", "c", "c.txt"]);
    assert_eq!(content, "ALPHA\nALPHA\n");

    let missing = p.pipe(&["show", "p.yaml", "c", "nope.txt"]);
    assert!(!missing.status.success());
    assert!(both(&missing).contains("has no file nope.txt (its files: c.txt)"));

    let not_run = p.pipe(&["show", "p.yaml", "d"]);
    assert!(!not_run.status.success());
    assert!(
        both(&not_run).contains("`d` is not cached") && both(&not_run).contains("new"),
        "{}",
        both(&not_run)
    );
    let unknown = p.pipe(&["show", "p.yaml", "zz"]);
    assert!(
        both(&unknown).contains("`zz` selects no stage in p.yaml: no stage has this name"),
        "{}",
        both(&unknown)
    );
}

#[test]
fn plan_summary_counts_cached_cells_per_stage() {
    let p = Project::new();
    p.write(
        "g.yaml",
        r#"
stages:
  cell:
    kind: shell
    params:
      cmd: echo "$SEED" > "$PIPE_OUT/s.txt"
    matrix:
      env.SEED: [1, 2, 3]
  all:
    kind: shell
    inputs:
      cells: cell
    params:
      cmd: echo "$PIPE_IN_CELLS" > "$PIPE_OUT/all.txt"
"#,
    );
    p.ok(&["run", "g.yaml", "--only", "cell[env.SEED=2]"]);
    let summary = p.ok(&["plan", "g.yaml", "--summary"]);
    let line = |stage: &str| {
        summary
            .lines()
            .find(|l| l.starts_with(&format!("{stage} ")))
            .unwrap_or_else(|| panic!("{stage} missing:\n{summary}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line("cell")[1..], ["shell", "3", "1", "2"], "{summary}");
    assert_eq!(line("all")[1..], ["shell", "1", "0", "1"], "{summary}");
    assert!(summary.ends_with("3 to run, 1 cached\n"), "{summary}");
    p.ok(&["run", "g.yaml"]);
    let done = p.ok(&["plan", "g.yaml", "--summary"]);
    assert!(
        done.contains("cell ") && done.lines().nth(1).unwrap().ends_with('✓'),
        "{done}"
    );
}

#[test]
fn only_takes_wildcards_and_says_why_a_selection_is_empty() {
    let p = Project::new();
    p.write(
        "g.yaml",
        r#"
stages:
  probe_a:
    kind: shell
    params:
      cmd: echo "$SEED" > "$PIPE_OUT/a.txt"
    matrix:
      env.SEED: [1, 2]
  probe_b:
    kind: shell
    params:
      cmd: echo "$SEED" > "$PIPE_OUT/b.txt"
    matrix:
      env.SEED: [1, 2]
  other:
    kind: shell
    params:
      cmd: echo x > "$PIPE_OUT/o.txt"
"#,
    );
    // a `*` in the stage name selects every stage it matches, with or without coordinates
    let plan = p.ok(&["plan", "g.yaml", "--only", "probe_*[env.SEED=2]"]);
    assert!(plan.contains("probe_a[env.SEED=2]") && plan.contains("probe_b[env.SEED=2]"));
    assert!(
        plan.ends_with("2 to run, 0 cached (3 not selected by --only)\n"),
        "{plan}"
    );
    p.ok(&["run", "g.yaml", "--only", "probe_*"]);
    assert_eq!(p.status_of("g.yaml", "probe_b[env.SEED=1]").0, "cached");
    assert_eq!(p.status_of("g.yaml", "other").0, "run");

    // a typo gets the nearest name; a wrong coordinate, the ones the stage has
    let typo = p.pipe(&["run", "g.yaml", "--only", "probe_c"]);
    assert!(!typo.status.success());
    assert!(
        both(&typo).contains("`probe_c` selects no stage in this pipeline: no stage has this name; did you mean `probe_a`?"),
        "{}",
        both(&typo)
    );
    let axis = p.pipe(&["plan", "g.yaml", "--only", "probe_a[SEED=1]"]);
    assert!(
        both(&axis).contains("its cells have no coordinate `SEED`; they have `env.SEED`"),
        "{}",
        both(&axis)
    );
    let value = p.pipe(&["run", "g.yaml", "--force", "probe_*[env.SEED=3]"]);
    assert!(
        both(&value).contains("no cell has env.SEED=3; its env.SEED values: `1`, `2`"),
        "{}",
        both(&value)
    );
    let unclosed = p.pipe(&["plan", "g.yaml", "--only", "probe_a[env.SEED=1"]);
    assert!(
        both(&unclosed)
            .contains("`probe_a[env.SEED=1` selects no stage in this pipeline: `[` without `]`"),
        "{}",
        both(&unclosed)
    );
    let none = p.pipe(&["plan", "g.yaml", "--only", "eval_*"]);
    assert!(
        both(&none).contains("`eval_*` selects no stage in this pipeline: no stage has this name")
    );
}

#[test]
fn report_lists_what_it_lacks_by_stage_with_the_command_that_computes_it() {
    let p = Project::new();
    p.write(
        "g.yaml",
        r#"
stages:
  cell:
    kind: shell
    params:
      cmd: echo "$SEED" > "$PIPE_OUT/s.txt"
    matrix:
      env.SEED: [1, 2, 3, 4, 5]
  other:
    kind: shell
    params:
      cmd: echo x > "$PIPE_OUT/o.txt"
  summary:
    kind: report
    inputs: {cells: cell, o: other}
    params: {template: {inline: "{{ rows | length }} results"}}
"#,
    );
    p.ok(&["run", "g.yaml", "--only", "cell[env.SEED=1]"]);
    let out = p.ok(&["report", "g.yaml", "-o", "early"]);
    assert!(
        out.contains(
            "5 result(s) not in the cache yet (their cells show \"—\"); \
             `pipe run g.yaml --only STAGE` computes a stage's:\n  \
             cell   4 cells, e.g. cell[env.SEED=2]\n  other\n"
        ),
        "{out}"
    );
    p.ok(&[
        "run",
        "g.yaml",
        "--only",
        "other",
        "--only",
        "cell[env.SEED=2]",
    ]);
    let out = p.ok(&["report", "g.yaml", "-o", "early"]);
    assert!(
        out.contains(
            "computes a stage's:\n  cell  cell[env.SEED=3], cell[env.SEED=4], cell[env.SEED=5]\n"
        ),
        "{out}"
    );
}

#[test]
fn show_without_the_profile_a_result_ran_under_names_that_profile() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!("{CHAIN}profiles:\n  loud:\n    a:\n      cmd: echo LOUD > a.txt\n"),
    );
    p.ok(&["run", "p.yaml", "--profile", "loud", "--only", "b"]);
    let forgot = p.pipe(&["show", "p.yaml", "b"]);
    assert!(!forgot.status.success());
    assert!(
        both(&forgot).contains("hint: it is cached under `--profile loud`"),
        "{}",
        both(&forgot)
    );
    assert_eq!(
        p.ok(&["show", "p.yaml", "b", "--profile", "loud", "b.txt"]),
        "LOUD\n"
    );
    // `c` never ran anywhere: no hint
    let never = p.pipe(&["show", "p.yaml", "c"]);
    assert!(!both(&never).contains("hint:"), "{}", both(&never));
}

#[test]
fn two_stages_with_one_key_run_once_and_both_feed_their_children() {
    let p = Project::new();
    // `a` and `b` are the same computation under two names (as one checkpoint fetched for
    // two tables); each has a child of its own
    p.write(
        "p.yaml",
        r#"
stages:
  a:
    kind: shell
    params: {cmd: 'sleep 0.3; echo same > "$PIPE_OUT/x.txt"'}
  b:
    kind: shell
    params: {cmd: 'sleep 0.3; echo same > "$PIPE_OUT/x.txt"'}
  from_a:
    kind: shell
    inputs: {up: a}
    params: {cmd: 'cat "$PIPE_IN_UP/x.txt" > "$PIPE_OUT/y.txt"'}
  from_b:
    kind: shell
    inputs: {up: b}
    params: {cmd: 'cat "$PIPE_IN_UP/x.txt" "$PIPE_IN_UP/x.txt" > "$PIPE_OUT/y.txt"'}
"#,
    );
    let out = p.ok(&["run", "p.yaml", "--jobs", "4"]);
    assert!(out.contains("failed 0, skipped 0"), "{out}");
    assert!(
        out.contains("✓ a (same key as b: its result)")
            || out.contains("✓ b (same key as a: its result)"),
        "one of the twins runs, the other takes its result: {out}"
    );
    assert_eq!(p.ok(&["show", "p.yaml", "from_b", "y.txt"]), "same\nsame\n");
    let again = p.ok(&["run", "p.yaml"]);
    assert!(again.contains("ran 0, cached 4"), "{again}");
}

/// A device this build lacks is an error that says how to get it, before any work starts.
#[cfg(not(feature = "cuda"))]
#[test]
fn a_device_this_build_lacks_is_refused_with_the_feature_to_build() {
    let p = Project::new();
    for args in [
        &["bench", "train", "--device", "cuda:0"][..],
        &[
            "encode", "--model", "path:.", "--json", "--device", "cuda:1", "text",
        ][..],
    ] {
        let out = p.pipe(args);
        let text = both(&out);
        assert_eq!(out.status.code(), Some(2), "pipe {args:?}: {text}");
        assert!(
            text.contains("this `pipe` was built without CUDA; rebuild with `--features cuda`"),
            "pipe {args:?}: {text}"
        );
    }
    let bad = both(&p.pipe(&["bench", "train", "--device", "gpu"]));
    assert!(
        bad.contains("expected `cpu`, `cuda:N`, `wgpu` or `tch`"),
        "{bad}"
    );
    // `run` refuses it before any stage starts, not stage by stage
    p.write("p.yaml", CHAIN);
    let out = p.pipe(&["run", "p.yaml", "--device", "cuda:0"]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("device `cuda:0`: this `pipe` was built without CUDA"),
        "{text}"
    );
    assert!(!text.contains('▶'), "nothing started: {text}");
    assert!(p.ok(&["plan", "p.yaml"]).contains("4 to run, 0 cached"));
}

/// `bench train --phases` says where a step's time goes: each part timed alone, in the text
/// and in `--json`, and the cost of one small op.
#[test]
fn bench_train_phases_say_where_the_step_goes() {
    let p = Project::new();
    let args = [
        "bench", "train", "--shapes", "2x8", "--warmup", "0", "--steps", "1", "--phases",
    ];
    let run = |json: bool| {
        let mut cmd = p.cmd(&args);
        if json {
            // the A/B arm with burn's reference forms reports itself as such
            cmd.args(["--json", "--reference-kernels"]);
        }
        // pipe alone: PyTorch is not part of this test
        let out = cmd
            .env("PIPE_TORCH_PYTHON", "false")
            .output()
            .expect("run pipe");
        assert!(out.status.success(), "{}", both(&out));
        out
    };
    let text = both(&run(false));
    assert!(
        text.contains("one small elementwise op (x + 1 on 384 floats):"),
        "{text}"
    );
    assert!(
        text.contains("2x8    pipe   phases: forward + loss ") && text.contains("clip + AdamW"),
        "{text}"
    );
    let out = run(true);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", both(&out)));
    let shape = &report["shapes"][0];
    for part in ["forward_and_loss_s", "backward_s", "update_s"] {
        let seconds = shape["phases"][part].as_f64().unwrap_or(f64::NAN);
        assert!(seconds > 0.0, "{part}: {shape}");
    }
    assert!(
        shape["small_op_us"].as_f64().is_some_and(|us| us > 0.0),
        "{shape}"
    );
    assert_eq!(
        shape["reference_kernels"],
        serde_json::json!(true),
        "{shape}"
    );
}

#[test]
fn stats_of_a_failing_stage_prints_its_error() {
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    p.write("data/train.tsv", "a\tb\tc\n");
    p.write(
        "p.yaml",
        "stages:\n  files: {kind: fetch, params: {source: \"path:data\"}}\n  corpus:\n    \
         kind: corpus\n    inputs: {source: files}\n    params: {format: blurb_tsv, files: \
         {train: train.tsv}, label2id: {a: 0}}\n",
    );
    let out = p.pipe(&["stats", "p.yaml", "corpus"]);
    let msg = both(&out);
    assert_eq!(out.status.code(), Some(1), "a stage failed: {msg}");
    assert!(
        msg.contains(
            "stage `corpus` failed: `corpus`: train.tsv:1: label id `b` is not in label2id"
        ),
        "{msg}"
    );
}

#[test]
fn a_missing_corpus_file_is_named_by_its_param_and_source_stage() {
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    p.write("data/train.tsv", "x\t0\n");
    p.write(
        "p.yaml",
        "stages:\n  files: {kind: fetch, params: {source: \"path:data\"}}\n  corpus:\n    \
         kind: corpus\n    inputs: {source: files}\n    params: {format: blurb_tsv, files: \
         {train: train.tsv, test: tst.tsv}, label2id: {a: 0}}\n",
    );
    let out = p.pipe(&["run", "p.yaml"]);
    let msg = both(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains(
            "param `files.test`: `tst.tsv` is not in the output of `files` (it holds: train.tsv)"
        ),
        "{msg}"
    );
    assert!(!msg.contains("/views/"), "no internal cache path: {msg}");
}

#[test]
fn including_a_file_that_is_not_a_pipeline_does_not_print_it() {
    let p = Project::new();
    let secret = "the contents of some notes file that must not be echoed back";
    p.write("notes.txt", &format!("{secret}\n"));
    p.write(
        "p.yaml",
        "include: [notes.txt]\nstages:\n  a: {kind: shell, params: {cmd: \"true\"}}\n",
    );
    let out = p.pipe(&["plan", "p.yaml"]);
    let msg = both(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("notes.txt:1:1: not a pipeline: the file is a YAML string"),
        "{msg}"
    );
    assert!(!msg.contains(secret), "{msg}");
}

#[test]
fn plan_checks_every_profile_not_only_the_selected_one() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  a: {kind: shell, params: {cmd: \"true\"}}\nprofiles:\n  fast:\n    \
         a: {cmdd: \"false\"}\n",
    );
    let out = p.pipe(&["plan", "p.yaml"]);
    let msg = both(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("profile `fast` (checked though not selected)")
            && msg.contains("param `cmdd`: unknown field `cmdd`"),
        "{msg}"
    );
}

/// #22 item 9: a corpus line with a stray column, or with a NUL byte, stops the `corpus`
/// stage at its file and line (nothing cached); `on_error: skip` counts it, visibly.
#[test]
fn a_stray_column_or_a_nul_byte_stops_the_corpus_at_its_line() {
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    let yaml = |extra: &str| {
        format!(
            "stages:\n  files: {{kind: fetch, params: {{source: \"path:data\"}}}}\n  corpus:\n    \
             kind: corpus\n    inputs: {{source: files}}\n    params: {{format: blurb_tsv, files: \
             {{train: train.tsv}}, label2id: {{a: 0, b: 1}}{extra}}}\n"
        )
    };
    for (bad, says) in [
        (
            "@GENE$ x @CHEMICAL$\t1\tstray\n",
            "train.tsv:2: expected 2 tab-separated columns (as most lines of the file), found 3",
        ),
        (
            "@GENE$ x\0 @CHEMICAL$\t1\n",
            "train.tsv:2: a NUL byte in the line (a binary or damaged file?)",
        ),
    ] {
        p.write(
            "data/train.tsv",
            &format!("@GENE$ y @CHEMICAL$\t0\n{bad}@GENE$ z @CHEMICAL$\t1\n"),
        );
        p.write("p.yaml", &yaml(""));
        let out = p.pipe(&["run", "p.yaml"]);
        let msg = both(&out);
        assert_eq!(out.status.code(), Some(1), "{msg}");
        assert!(msg.contains(says), "{msg}");
        let plan = p.pipe(&["plan", "p.yaml"]);
        assert!(both(&plan).contains("corpus"), "{}", both(&plan));
        // asked to skip: the run succeeds and says how many lines it skipped
        p.write("p.yaml", &yaml(", on_error: skip"));
        let out = p.pipe(&["run", "p.yaml"]);
        let msg = both(&out);
        assert!(out.status.success(), "{msg}");
        let stats = p.pipe(&["stats", "p.yaml", "corpus"]);
        assert!(both(&stats).contains("skipped"), "{}", both(&stats));
    }
}

/// #24: `pipe cache gc` also removes the Slurm job logs of results it does not keep, and
/// keeps those of the stages the pipelines still name.
#[test]
fn gc_removes_the_job_logs_of_results_it_does_not_keep() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  a: {kind: shell, params: {cmd: 'echo alpha > \"$PIPE_OUT/a.txt\"'}}\n",
    );
    p.ok(&["run", "p.yaml"]);
    let out = p.ok(&["plan", "p.yaml", "--json"]);
    let rows: serde_json::Value =
        serde_json::from_str(&out[out.find('[').expect("json")..]).expect("plan --json");
    let kept = rows[0]["key"].as_str().expect("key").to_string();
    let gone = "ab".repeat(32);
    let logs = p.path().join("cache/slurm/logs");
    for key in [&kept, &gone] {
        std::fs::create_dir_all(logs.join(key)).unwrap();
        std::fs::write(logs.join(key).join("12.log"), "job output\n").unwrap();
    }
    let out = p.ok(&["cache", "gc", "p.yaml"]);
    assert!(out.contains("the Slurm job logs of 1 stages"), "{out}");
    assert!(logs.join(&kept).join("12.log").is_file());
    assert!(!logs.join(&gone).exists());
}

/// #27: the local executor holds one job ready beyond `--jobs`; still, no more than
/// `--jobs` stages run at once, and a stage's "▶" line shows when it starts running.
#[test]
fn jobs_bounds_the_stages_running_at_once_and_start_lines_follow_them() {
    let p = Project::new();
    // each stage notes its start and end in a shared log, sleeping between
    let mut yaml = String::from("stages:\n");
    for name in ["a", "b", "c", "d"] {
        yaml.push_str(&format!(
            "  {name}:\n    kind: shell\n    params:\n      cmd: 'echo start {name} >> \"$PIPE_PROJECT/log\"; sleep 0.2; echo end {name} >> \"$PIPE_PROJECT/log\"; echo {name} > o'\n      outs: [o]\n"
        ));
    }
    p.write("p.yaml", &yaml);
    let text = p.ok(&["run", "p.yaml", "--jobs", "1"]);
    let log = std::fs::read_to_string(p.path().join("log")).expect("log");
    let mut running = 0;
    for line in log.lines() {
        running += if line.starts_with("start") { 1 } else { -1 };
        assert!(running <= 1, "two stages ran at once with --jobs 1:\n{log}");
    }
    // on the terminal: each start after the end of the one before
    let events: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('▶') || l.starts_with('✓'))
        .collect();
    assert_eq!(events.len(), 8, "{text}");
    for pair in events.chunks(2) {
        assert!(
            pair[0].starts_with('▶') && pair[1].starts_with('✓'),
            "a start line shown while another stage ran:\n{text}"
        );
    }
    let log = std::fs::read_to_string(p.path().join("log")).expect("log");
    std::fs::remove_file(p.path().join("log")).expect("rm log");
    // two at a time with --jobs 2, from an empty cache
    std::fs::remove_dir_all(p.path().join("cache")).expect("rm cache");
    p.ok(&["run", "p.yaml", "--jobs", "2"]);
    let log2 = std::fs::read_to_string(p.path().join("log")).expect("log");
    let (mut running, mut most) = (0, 0);
    for line in log2.lines() {
        running += if line.starts_with("start") { 1 } else { -1 };
        most = most.max(running);
    }
    assert_eq!(
        most, 2,
        "--jobs 2 ran at most {most} at once:\n{log2}\n(before: {log})"
    );
}

/// `bench engine` says what the engine adds to a cold run beside the start-up floor: the
/// CPU of the run (pipe and its `sh`s), pipe's own, and the floor's, in the text and in
/// `--json`.
#[test]
fn bench_engine_says_the_cpu_a_cold_run_adds_to_the_floor() {
    let p = Project::new();
    let dir = p.path().join("bench");
    let dir = dir.to_str().expect("utf-8 path");
    let args = ["bench", "engine", "--stages", "40", "--repeat", "1"];
    let out = p
        .cmd(&args)
        .args(["--dir", dir])
        .output()
        .expect("run pipe");
    let text = both(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("engine CPU"), "{text}");
    assert!(text.contains("pipe's own"), "{text}");
    assert!(text.contains("its scheduler thread's"), "{text}");
    assert!(text.contains("cores busy"), "{text}");
    let out = p
        .cmd(&args)
        .args(["--dir", dir, "--cold", "--json"])
        .output()
        .expect("run pipe");
    assert!(out.status.success(), "{}", both(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", both(&out)));
    let cold = &report["steps"][0];
    assert_eq!(cold["step"], "cold run", "{report}");
    assert_eq!(cold["ran"].as_u64(), report["stages"].as_u64(), "{report}");
    // 40 `sh` started: their CPU is counted with the run's
    let cpu = cold["cpu_seconds"].as_f64().unwrap_or(0.0);
    assert!(cpu > 0.0, "{report}");
    let floor = report["start_up_floor_cpu_seconds"].as_f64().unwrap_or(0.0);
    assert!(floor > 0.0 && floor * 40.0 < cpu * 10.0, "{report}");
    // pipe's own share of it, its `sh`s left out
    let own = cold["pipe_cpu_seconds"]
        .as_f64()
        .expect("pipe's own CPU (Linux)");
    assert!(own <= cpu, "{report}");
    // and its scheduler thread's, a part of pipe's own
    let scheduler = cold["scheduler_cpu_seconds"]
        .as_f64()
        .expect("the scheduler thread's CPU (Linux)");
    assert!((0.0..=own).contains(&scheduler), "{report}");
}

/// a small result, a large one (300 kB in a sub-folder), and one computed from the first.
const SHARED: &str = r#"
stages:
  a:
    kind: shell
    params:
      cmd: echo alpha > "$PIPE_OUT/a.txt"
  big:
    kind: shell
    params:
      cmd: mkdir "$PIPE_OUT/weights" && head -c 300000 /dev/zero > "$PIPE_OUT/weights/w.bin"
  b:
    kind: shell
    inputs:
      up: a
    params:
      cmd: tr a-z A-Z < "$PIPE_IN_UP/a.txt" > "$PIPE_OUT/b.txt"
"#;

#[test]
fn results_pushed_to_a_remote_are_pulled_into_another_cache_and_not_computed_again() {
    let p = Project::new();
    p.write("p.yaml", SHARED);
    p.ok(&["run", "p.yaml"]);
    let push = p.ok(&[
        "cache",
        "push",
        "p.yaml",
        "--to",
        "remote",
        "--max-size",
        "100KiB",
    ]);
    assert!(
        push.contains("pushed  a (6 B)") && push.contains("pushed  b (6 B)"),
        "{push}"
    );
    assert!(push.contains("pushed 2 results (12 B) to remote"), "{push}");
    assert!(
        push.contains("1 over --max-size 100.0 KiB, left out: big (293.0 KiB)"),
        "{push}"
    );
    let again = p.ok(&["cache", "push", "p.yaml", "--to", "remote"]);
    assert!(
        again.contains("pushed  big (293.0 KiB)") && again.contains("2 already there"),
        "{again}"
    );

    // another cache, as on another machine: `b` and what it needs
    let pull = p.ok(&[
        "--cache", "other", "cache", "pull", "p.yaml", "--from", "remote", "--only", "b",
    ]);
    assert!(
        pull.contains("pulled 2 results (12 B) from remote"),
        "{pull}"
    );
    let plan = p.ok(&["--cache", "other", "plan", "p.yaml"]);
    assert!(plan.contains("1 to run, 2 cached"), "{plan}");
    assert_eq!(
        p.ok(&["--cache", "other", "show", "p.yaml", "b", "b.txt"])
            .trim(),
        "ALPHA"
    );
    let pull_all = p.ok(&[
        "--cache", "other", "cache", "pull", "p.yaml", "--from", "remote",
    ]);
    assert!(
        pull_all.contains("pulled  big (293.0 KiB)") && pull_all.contains("2 already cached"),
        "{pull_all}"
    );
    let run = p.ok(&["--cache", "other", "run", "p.yaml"]);
    assert!(run.contains("ran 0, cached 3"), "{run}");
    // the pulled result verifies as one computed here does
    let verify = p.ok(&["--cache", "other", "cache", "verify"]);
    assert!(verify.contains("cache OK"), "{verify}");
}

#[test]
fn a_damaged_file_in_a_remote_is_named_and_never_pulled() {
    let p = Project::new();
    p.write("p.yaml", SHARED);
    p.ok(&["run", "p.yaml", "--only", "a"]);
    p.ok(&["cache", "push", "p.yaml", "--to", "remote"]);
    // the one file blob of `a` ("alpha\n"), changed in place
    let blob = common::blob_path(&p.path().join("remote/blobs"), b"alpha\n");
    common::make_writable(&blob);
    std::fs::write(&blob, "omega\n").expect("damage");

    let out = p.pipe(&[
        "--cache", "other", "cache", "pull", "p.yaml", "--from", "remote",
    ]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("not pulled: a: the remote's copy is damaged: its file `a.txt`: its blob")
            && text.contains("holds 6 bytes hashing to")
            && text.contains("(push it again from a cache that holds it)"),
        "{text}"
    );
    assert!(text.contains("pulled 0 results"), "{text}");
    let plan = p.ok(&["--cache", "other", "plan", "p.yaml"]);
    assert!(plan.contains("3 to run, 0 cached"), "{plan}");
    // pushed again from the cache that holds it, the remote's copy is whole again
    let repush = p.ok(&["cache", "push", "p.yaml", "--to", "remote"]);
    assert!(repush.contains("pushed  a (6 B)"), "{repush}");
    let pull = p.ok(&[
        "--cache", "other", "cache", "pull", "p.yaml", "--from", "remote",
    ]);
    assert!(pull.contains("pulled  a (6 B)"), "{pull}");

    let none = p.pipe(&["cache", "pull", "p.yaml", "--from", "nowhere"]);
    assert_eq!(none.status.code(), Some(4), "{}", both(&none));
    assert!(
        both(&none).contains("nowhere: no results remote here"),
        "{}",
        both(&none)
    );
}

/// A large training result and the small score computed from it (a fine-tuning and its
/// evaluation, in miniature).
const TRAIN_AND_SCORE: &str = r#"
stages:
  train:
    kind: shell
    params:
      cmd: mkdir "$PIPE_OUT/weights" && head -c 300000 /dev/zero > "$PIPE_OUT/weights/w.bin"
  score:
    kind: shell
    inputs:
      model: train
    params:
      cmd: wc -c < "$PIPE_IN_MODEL/weights/w.bin" > "$PIPE_OUT/score.txt"
"#;

#[test]
fn a_pulled_score_does_not_train_again_when_its_model_was_left_out() {
    let p = Project::new();
    p.write("p.yaml", TRAIN_AND_SCORE);
    p.ok(&["run", "p.yaml"]);
    p.ok(&[
        "cache",
        "push",
        "p.yaml",
        "--to",
        "remote",
        "--max-size",
        "100KiB",
    ]);
    p.ok(&[
        "--cache", "other", "cache", "pull", "p.yaml", "--from", "remote",
    ]);

    // the score is there: the model it was computed from is not needed for it
    let plan = p.ok(&["--cache", "other", "plan", "p.yaml", "--only", "score"]);
    assert!(plan.contains("0 to run, 1 cached, 1 not needed"), "{plan}");
    assert!(
        plan.lines().any(|l| l.starts_with("skip    train")
            && l.ends_with("not needed: what reads it is cached")),
        "{plan}"
    );
    let summary = p.ok(&[
        "--cache",
        "other",
        "plan",
        "p.yaml",
        "--only",
        "score",
        "--summary",
    ]);
    assert!(
        summary.contains("0 to run, 1 cached, 1 not needed\n"),
        "{summary}"
    );
    let push = p.ok(&[
        "--cache", "other", "cache", "push", "p.yaml", "--to", "remote2", "--only", "score",
    ]);
    assert!(
        push.contains("1 not cached here, and not needed by the results that are: train"),
        "{push}"
    );
    let run = p.ok(&["--cache", "other", "run", "p.yaml", "--only", "score"]);
    assert!(
        run.contains("ran 0, cached 1, failed 0, skipped 0, 1 not needed in"),
        "{run}"
    );
    assert_eq!(
        p.ok(&["--cache", "other", "show", "p.yaml", "score", "score.txt"])
            .trim(),
        "300000"
    );

    // a damaged score runs again, and so does the model it needs
    let score_blob = common::blob_path(&p.path().join("other/blobs"), b"300000\n");
    common::make_writable(&score_blob);
    std::fs::write(&score_blob, "999999\n").expect("damage");
    let rerun = p.ok(&["--cache", "other", "run", "p.yaml", "--only", "score"]);
    assert!(rerun.contains("ran 2, cached 0"), "{rerun}");
    assert_eq!(
        p.ok(&["--cache", "other", "show", "p.yaml", "score", "score.txt"])
            .trim(),
        "300000"
    );

    // with no --only every stage is asked for: the model is computed
    p.ok(&[
        "--cache", "third", "cache", "pull", "p.yaml", "--from", "remote",
    ]);
    let plan_all = p.ok(&["--cache", "third", "plan", "p.yaml"]);
    assert!(plan_all.contains("1 to run, 1 cached\n"), "{plan_all}");
}

/// A `summary` of a result copies what a report reads of it; a result with none of those
/// files is an error naming the stage it summarises.
#[test]
fn a_summary_copies_what_a_report_reads_and_refuses_a_result_without_it() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  scored:
    kind: shell
    params:
      cmd: 'echo "{\"f1\": 0.5}" > "$PIPE_OUT/metrics.json"; echo big > "$PIPE_OUT/weights.bin"'
  scored_summary: {kind: summary, inputs: {of: scored}}
  unscored:
    kind: shell
    params: {cmd: 'echo big > "$PIPE_OUT/weights.bin"'}
  unscored_summary: {kind: summary, inputs: {of: unscored}}
  file_summary: {kind: summary, inputs: {of: scored.metrics.json}}
"#,
    );
    let out = p.pipe(&["run", "p.yaml"]);
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("ran 3, cached 0, failed 2"), "{text}");
    assert!(
        text.contains("metrics.json is a file; bind the stage (scored)"),
        "{text}"
    );
    assert!(
        text.contains("input `of`: unscored (")
            && text.contains("has none of metrics.json, history.json, stats.json"),
        "{text}"
    );
    let shown = p.ok(&["show", "p.yaml", "scored_summary"]);
    assert!(shown.contains("metrics.json"), "{shown}");
    assert!(!shown.contains("weights.bin"), "{shown}");
}

/// `files` carries a figure the report embeds; a named file the result lacks fails the
/// stage, and a path instead of a name is refused at plan.
#[test]
fn a_summary_carries_the_files_it_names() {
    let p = Project::new();
    const FIGURE: &str = r#"
stages:
  parser:
    kind: shell
    params:
      cmd: 'echo "{\"uas\": 0.5}" > "$PIPE_OUT/metrics.json"; echo "<svg/>" > "$PIPE_OUT/heatmap.svg"; echo big > "$PIPE_OUT/weights.bin"'
  parser_summary: {kind: summary, inputs: {of: parser}, params: {files: [FILES]}}
"#;
    p.write("p.yaml", &FIGURE.replace("FILES", "heatmap.svg"));
    p.ok(&["run", "p.yaml"]);
    let shown = p.ok(&["show", "p.yaml", "parser_summary"]);
    assert!(
        shown.contains("metrics.json") && shown.contains("heatmap.svg"),
        "{shown}"
    );
    assert!(!shown.contains("weights.bin"), "{shown}");
    let svg = p.ok(&["show", "p.yaml", "parser_summary", "heatmap.svg"]);
    assert!(svg.contains("<svg/>"), "{svg}");

    p.write("p.yaml", &FIGURE.replace("FILES", "arcs.svg"));
    let out = p.pipe(&["run", "p.yaml"]);
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("has no `arcs.svg`, named in `files`"),
        "{text}"
    );

    p.write("p.yaml", &FIGURE.replace("FILES", "../parser/weights.bin"));
    let out = p.pipe(&["plan", "p.yaml"]);
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("parser_summary")
            && text.contains("param `files`: `../parser/weights.bin` is not a file name"),
        "{text}"
    );
}

/// A report bound to a result over the remote's --max-size loses its rows in a pulled
/// cache: the push says so and names the fix, and a `summary` of the result carries what
/// the report reads.
#[test]
fn a_report_of_a_large_result_renders_from_a_pull_through_its_summary() {
    const LARGE: &str = r#"
stages:
  model:
    kind: shell
    params:
      cmd: 'head -c 300000 /dev/zero > "$PIPE_OUT/weights.bin"; echo "{\"f1\": 0.75}" > "$PIPE_OUT/metrics.json"'
  model_summary: {kind: summary, inputs: {of: model}}
  report:
    kind: report
    inputs: {m: READ}
    params: {template: {inline: "{% for r in rows %}f1={{ r.metrics.f1 }}{% else %}none{% endfor %}"}}
"#;
    let p = Project::new();
    p.write("direct.yaml", &LARGE.replace("READ", "model"));
    p.ok(&["run", "direct.yaml"]);
    let push = p.ok(&[
        "cache",
        "push",
        "direct.yaml",
        "--to",
        "remote",
        "--max-size",
        "100KiB",
    ]);
    assert!(
        push.contains("hint: a report reads 1 of them itself (model)")
            && push.contains("bind the report to a `summary` of each"),
        "{push}"
    );

    p.write("summarised.yaml", &LARGE.replace("READ", "model_summary"));
    p.ok(&["run", "summarised.yaml"]);
    let push = p.ok(&[
        "cache",
        "push",
        "summarised.yaml",
        "--to",
        "remote",
        "--max-size",
        "100KiB",
    ]);
    assert!(!push.contains("hint:"), "{push}");
    p.ok(&[
        "--cache",
        "pulled",
        "cache",
        "pull",
        "summarised.yaml",
        "--from",
        "remote",
    ]);
    p.ok(&[
        "--cache",
        "pulled",
        "report",
        "summarised.yaml",
        "-o",
        "out",
    ]);
    let report = std::fs::read_to_string(p.path().join("out/report.md")).expect("report");
    assert!(report.starts_with("f1=0.75\n"), "{report}");
}
