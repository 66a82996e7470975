//! `pipe run --executor slurm` on a real Slurm cluster: `scripts/slurm-local.sh` starts a
//! single-node one on this machine (installing `slurm-wlm` and `munge` when missing), then
//! pipelines of `shell` stages run through it. Where the cluster cannot be started (not
//! root and no sudo, no package mirror), the cluster tests print `SKIPPED: <why>` and pass.
//!
//! Each stage's job is found by its name (`pipe:<stage cell>`) in the cluster's job
//! completion log (`jobcomp/filetxt`, the script's choice in place of `sacct`, which needs
//! slurmdbd).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::text;

/// The started cluster's job completion log, or why there is none.
fn cluster() -> Result<PathBuf, String> {
    static CLUSTER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local.sh");
            let out = Command::new(&script)
                .output()
                .map_err(|e| format!("{}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/slurm-local.sh could not start a cluster: {}",
                    text(&out).trim()
                ));
            }
            let ready = String::from_utf8_lossy(&out.stdout).to_string();
            let jobcomp = ready
                .split("jobcomp ")
                .nth(1)
                .map(|s| PathBuf::from(s.trim()))
                .ok_or_else(|| format!("unexpected output of slurm-local.sh: {ready}"))?;
            Ok(jobcomp)
        })
        .clone()
}

/// The cluster, or `None` after printing why the test is skipped.
fn cluster_or_skip(test: &str) -> Option<PathBuf> {
    match cluster() {
        Ok(jobcomp) => Some(jobcomp),
        Err(why) => {
            println!("SKIPPED: {test}: {why}");
            None
        }
    }
}

/// A folder with pipeline files and caches.
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
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).expect("write");
    }
    fn cmd(&self, cache: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pipe"));
        c.args(args)
            .current_dir(self.path())
            .env("PIPE_CACHE", self.path().join(cache))
            .env_remove("PIPE_MIRROR");
        c
    }
    fn pipe(&self, cache: &str, args: &[&str]) -> Output {
        self.cmd(cache, args).output().expect("run pipe")
    }
    fn journal(&self, cache: &str) -> String {
        std::fs::read_to_string(self.path().join(cache).join("slurm/journal.jsonl"))
            .unwrap_or_default()
    }
    /// Waits until a job of `stage` is in the journal of `cache`; its id.
    fn wait_for_job(&self, cache: &str, stage: &str, child: &mut Child) -> String {
        let t0 = Instant::now();
        loop {
            for line in self.journal(cache).lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                if v["event"] == "submitted" && v["stage"] == stage {
                    return v["job"].as_str().unwrap_or_default().to_string();
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the controller ended ({status}) before submitting {stage}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no job of {stage} submitted"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// `pipe plan --json` as stage -> (key, status).
    fn plan(&self, cache: &str, file: &str) -> BTreeMap<String, (String, String)> {
        let out = self.pipe(cache, &["plan", file, "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let rows: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("plan --json parses");
        rows.as_array()
            .expect("array")
            .iter()
            .map(|r| {
                (
                    r["stage"].as_str().unwrap_or_default().to_string(),
                    (
                        r["key"].as_str().unwrap_or_default().to_string(),
                        r["status"].as_str().unwrap_or_default().to_string(),
                    ),
                )
            })
            .collect()
    }
    /// The file `file` of a cached stage's output.
    fn show(&self, cache: &str, pipeline: &str, stage: &str, file: &str) -> String {
        let out = self.pipe(cache, &["show", pipeline, stage, file]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

/// `stage -> job id` from a run's `  stage → job N (log …)` lines.
fn submitted_jobs(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .filter_map(|l| {
            let (stage, rest) = l.trim_start().split_once(" → job ")?;
            let id = rest.split_whitespace().next()?;
            Some((stage.to_string(), id.to_string()))
        })
        .collect()
}

/// `job id -> (name, state)` of the cluster's finished jobs.
fn finished_jobs(jobcomp: &Path) -> BTreeMap<String, (String, String)> {
    let log = std::fs::read_to_string(jobcomp).unwrap_or_default();
    log.lines()
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k))
                    .map(str::to_string)
            };
            Some((field("JobId=")?, (field("Name=")?, field("JobState=")?)))
        })
        .collect()
}

/// Waits until the cluster has logged `id` as finished; its (name, state).
fn wait_finished(jobcomp: &Path, id: &str) -> (String, String) {
    let t0 = Instant::now();
    loop {
        if let Some(job) = finished_jobs(jobcomp).remove(id) {
            return job;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "job {id} never finished"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const DIAMOND: &str = r#"
stages:
  src:
    kind: shell
    params:
      cmd: "echo alpha > o && echo \"$PIPE_STAGE\" > $PIPE_OUT/name"
      outs: [o]
  left:
    kind: shell
    params:
      cmd: "tr a-z A-Z < $PIPE_IN_UP/o > o"
      outs: [o]
    inputs: {up: src}
    resources: {cpus: 1, mem: 200M, time: "10"}
  right:
    kind: shell
    params:
      cmd: "rev < $PIPE_IN_UP/o > o"
      outs: [o]
    inputs: {up: src}
  join:
    kind: shell
    params:
      cmd: "cat $PIPE_IN_A/o $PIPE_IN_B/o > o"
      outs: [o]
    inputs: {a: left, b: right}
"#;

#[test]
fn a_pipeline_runs_one_job_per_stage_with_the_keys_and_outputs_of_a_local_run() {
    let Some(jobcomp) = cluster_or_skip("slurm diamond") else {
        return;
    };
    let p = Project::new();
    p.write("d.yaml", DIAMOND);
    let local = p.pipe("local-cache", &["run", "d.yaml"]);
    assert!(local.status.success(), "{}", text(&local));

    let out = p.pipe("slurm-cache", &["run", "d.yaml", "--executor", "slurm"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("ran 4, cached 0, failed 0"), "{log}");
    // each stage is its own job, named after it, and completed
    let jobs = submitted_jobs(&log);
    assert_eq!(
        jobs.keys().collect::<Vec<_>>(),
        ["join", "left", "right", "src"],
        "{log}"
    );
    let ids: BTreeSet<&String> = jobs.values().collect();
    assert_eq!(ids.len(), 4, "one job per stage: {jobs:?}");
    for (stage, id) in &jobs {
        let (name, state) = wait_finished(&jobcomp, id);
        assert_eq!(name, format!("pipe:{stage}"));
        assert_eq!(state, "COMPLETED", "job {id} of {stage}");
        let job_log = p
            .path()
            .join("slurm-cache/slurm/logs")
            .read_dir()
            .expect("logs folder")
            .flatten()
            .any(|d| d.path().join(format!("{id}.log")).is_file());
        assert!(job_log, "log of job {id} under the cache");
    }
    // the same keys, the same outputs
    let (l, s) = (
        p.plan("local-cache", "d.yaml"),
        p.plan("slurm-cache", "d.yaml"),
    );
    assert_eq!(l, s);
    assert!(s.values().all(|(_, status)| status == "cached"), "{s:?}");
    for stage in ["src", "left", "right", "join"] {
        assert_eq!(
            p.show("local-cache", "d.yaml", stage, "o"),
            p.show("slurm-cache", "d.yaml", stage, "o")
        );
    }
    assert_eq!(
        p.show("slurm-cache", "d.yaml", "join", "o"),
        "ALPHA\nahpla\n"
    );
    // nothing left staged; a second run submits nothing
    let staged = std::fs::read_dir(p.path().join("slurm-cache/slurm/jobs"))
        .expect("jobs folder")
        .count();
    assert_eq!(staged, 0);
    let again = p.pipe("slurm-cache", &["run", "d.yaml", "--executor", "slurm"]);
    let log = text(&again);
    assert!(again.status.success(), "{log}");
    assert!(log.contains("ran 0, cached 4"), "{log}");
    assert!(log.contains("slurm: submitted 0 jobs"), "{log}");
}

const FAILING: &str = r#"
stages:
  first:
    kind: shell
    params: {cmd: "echo one > o", outs: [o]}
  broken:
    kind: shell
    params:
      cmd: "echo half-written-by-broken > $PIPE_OUT/partial && exit 1"
      outs: [o]
    inputs: {up: first}
  after_broken:
    kind: shell
    params: {cmd: "cat $PIPE_IN_UP/o > o", outs: [o]}
    inputs: {up: broken}
  independent:
    kind: shell
    params: {cmd: "echo free > o", outs: [o]}
"#;

#[test]
fn a_failed_job_skips_its_descendants_and_commits_nothing() {
    let Some(jobcomp) = cluster_or_skip("slurm failure") else {
        return;
    };
    let p = Project::new();
    p.write("f.yaml", FAILING);
    let out = p.pipe("cache", &["run", "f.yaml", "--executor", "slurm"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("ran 2, cached 0, failed 1, skipped 1"),
        "{log}"
    );
    assert!(log.contains("failed: broken: "), "{log}");
    let show = text(&p.pipe("cache", &["show", "f.yaml", "broken"]));
    assert!(show.contains("its Slurm job logs: "), "{show}");
    assert!(log.contains("after_broken skipped"), "{log}");
    let jobs = submitted_jobs(&log);
    assert!(!jobs.contains_key("after_broken"), "{jobs:?}");
    let (name, state) = wait_finished(&jobcomp, &jobs["broken"]);
    assert_eq!((name.as_str(), state.as_str()), ("pipe:broken", "FAILED"));
    // nothing of the failed stage is in the cache
    let plan = p.plan("cache", "f.yaml");
    assert_eq!(plan["broken"].1, "run");
    assert_eq!(plan["independent"].1, "cached");
    let mut blobs = Vec::new();
    collect(&p.path().join("cache/blobs"), &mut blobs);
    assert!(!blobs.is_empty());
    for blob in blobs {
        let bytes = std::fs::read(&blob).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("half-written-by-broken"),
            "a file of the failed stage was stored: {}",
            blob.display()
        );
    }
    let staged = std::fs::read_dir(p.path().join("cache/slurm/jobs"))
        .expect("jobs folder")
        .count();
    assert_eq!(staged, 0, "staging folders removed");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            collect(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

const SLOW: &str = r#"
stages:
  slow_STAGE:
    kind: shell
    params: {cmd: "sleep SECONDS && echo done > o", outs: [o]}
  after_STAGE:
    kind: shell
    params: {cmd: "cat $PIPE_IN_UP/o > o", outs: [o]}
    inputs: {up: slow_STAGE}
"#;

fn slow(stage: &str, seconds: u32) -> String {
    SLOW.replace("STAGE", stage)
        .replace("SECONDS", &seconds.to_string())
}

#[test]
fn a_job_cancelled_with_scancel_fails_and_skips_its_descendants() {
    let Some(jobcomp) = cluster_or_skip("slurm scancel") else {
        return;
    };
    let p = Project::new();
    p.write("s.yaml", &slow("scancelled", 60));
    let mut child = p
        .cmd("cache", &["run", "s.yaml", "--executor", "slurm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pipe");
    let id = p.wait_for_job("cache", "slow_scancelled", &mut child);
    let cancelled = Command::new("scancel").arg(&id).status().expect("scancel");
    assert!(cancelled.success());
    let out = child.wait_with_output().expect("wait");
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("failed 1, skipped 1"), "{log}");
    assert!(log.contains("CANCELLED"), "{log}");
    let (_, state) = wait_finished(&jobcomp, &id);
    assert_eq!(state, "CANCELLED");
    assert_eq!(p.plan("cache", "s.yaml")["slow_scancelled"].1, "run");
}

#[test]
fn sigterm_cancels_the_jobs_of_the_run() {
    let Some(jobcomp) = cluster_or_skip("slurm SIGTERM") else {
        return;
    };
    let p = Project::new();
    p.write("s.yaml", &slow("terminated", 60));
    let mut child = p
        .cmd("cache", &["run", "s.yaml", "--executor", "slurm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pipe");
    let id = p.wait_for_job("cache", "slow_terminated", &mut child);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = child.wait_with_output().expect("wait");
    let log = text(&out);
    assert_eq!(out.status.code(), Some(4), "{log}");
    assert!(log.contains("interrupted"), "{log}");
    let (name, state) = wait_finished(&jobcomp, &id);
    assert_eq!(
        (name.as_str(), state.as_str()),
        ("pipe:slow_terminated", "CANCELLED")
    );
}

#[test]
fn a_restarted_controller_reattaches_to_its_running_job() {
    let Some(jobcomp) = cluster_or_skip("slurm re-attach") else {
        return;
    };
    let p = Project::new();
    p.write("s.yaml", &slow("reattached", 4));
    let mut child = p
        .cmd("cache", &["run", "s.yaml", "--executor", "slurm"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pipe");
    let id = p.wait_for_job("cache", "slow_reattached", &mut child);
    child.kill().expect("kill -9 the controller");
    let _ = child.wait();
    let out = p.pipe("cache", &["run", "s.yaml", "--executor", "slurm"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("slow_reattached: re-attached to job {id}")),
        "{log}"
    );
    assert!(log.contains("ran 2, cached 0"), "{log}");
    assert!(log.contains("submitted 1 jobs (sbatch "), "{log}");
    assert!(log.contains("re-attached to 1"), "{log}");
    wait_finished(&jobcomp, &id);
    // jobs of that name since ours (earlier test runs left theirs in the log)
    let ours: u64 = id.parse().expect("job id");
    let runs = finished_jobs(&jobcomp)
        .iter()
        .filter(|(job, (name, _))| {
            name == "pipe:slow_reattached" && job.parse::<u64>().is_ok_and(|j| j >= ours)
        })
        .count();
    assert_eq!(runs, 1, "the slow stage ran once");
    assert_eq!(p.show("cache", "s.yaml", "after_reattached", "o"), "done\n");
}

const WITH_RESOURCES: &str = r#"
templates:
  echo:
    kind: shell
    params: {cmd: "echo t > o", outs: [o]}
    resources: {cpus: 1, mem: 100M}
stages:
  a:
    template: echo
    resources: {time: "RUNTIME"}
  b:
    kind: shell
    params: {cmd: "cat $PIPE_IN_UP/o > o", outs: [o]}
    inputs: {up: a}
profiles:
  big:
    "kind:shell": {resources: {cpus: CPUS}}
    b: {resources: {partition: debug, extra: [--nice=10]}}
"#;

#[test]
fn resources_are_not_part_of_the_key() {
    let p = Project::new();
    let yaml = |time: &str, cpus: &str| {
        WITH_RESOURCES
            .replace("RUNTIME", time)
            .replace("CPUS", cpus)
    };
    p.write("r.yaml", &yaml("10", "2"));
    let out = p.pipe("cache", &["run", "r.yaml", "--profile", "big"]);
    assert!(out.status.success(), "{}", text(&out));
    p.write("r.yaml", &yaml("01:00:00", "8"));
    for profile in [None, Some("big")] {
        let mut args = vec!["plan", "r.yaml", "--json"];
        if let Some(pr) = profile {
            args.extend(["--profile", pr]);
        }
        let out = p.pipe("cache", &args);
        assert!(out.status.success(), "{}", text(&out));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        for row in rows.as_array().expect("rows") {
            assert_eq!(row["status"], "cached", "{profile:?}: {row}");
        }
    }
    // a mistyped field is refused at load, with where it is
    p.write("bad.yaml", &WITH_RESOURCES.replace("cpus: 1,", "cpu: 1,"));
    let out = p.pipe("cache", &["plan", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cpu"), "{}", text(&out));
}

#[test]
fn su2022_smoke_runs_through_slurm_as_it_runs_locally() {
    let Some(jobcomp) = cluster_or_skip("su2022 smoke through slurm") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("su2022.yaml"),
        common::pipeline_with_fixtures("su2022.yaml"),
    )
    .expect("write");
    let run = |args: &[&str]| common::pipe(dir.path(), args);
    let t0 = Instant::now();
    let out = run(&[
        "run",
        "su2022.yaml",
        "--profile",
        "smoke",
        "--executor",
        "slurm",
    ]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("failed 0, skipped 0"), "{log}");
    assert!(log.contains("published report → reports/su2022"), "{log}");
    println!(
        "su2022 smoke through slurm: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let jobs = submitted_jobs(&log);
    let ran: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("ran ")?.split(',').next()?.parse().ok())
        .expect("summary line");
    assert_eq!(jobs.len(), ran, "one job per stage that ran: {log}");
    let ids: BTreeSet<&String> = jobs.values().collect();
    assert_eq!(ids.len(), ran);
    for (stage, id) in &jobs {
        let (name, state) = wait_finished(&jobcomp, id);
        assert_eq!((name, state), (format!("pipe:{stage}"), "COMPLETED".into()));
    }
    let report = std::fs::read_to_string(dir.path().join("reports/su2022/report.md"))
        .expect("published report");
    assert!(report.contains("## Table 6"), "{report}");
    // A local run on another cache computes the same keys and the same report.
    let local_dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        dir.path().join("su2022.yaml"),
        local_dir.path().join("su2022.yaml"),
    )
    .expect("copy");
    let t0 = Instant::now();
    let local = common::pipe(
        local_dir.path(),
        &["run", "su2022.yaml", "--profile", "smoke", "--jobs", "2"],
    );
    assert!(local.status.success(), "{}", text(&local));
    println!("su2022 smoke locally: {:.1}s", t0.elapsed().as_secs_f64());
    let keys = |d: &Path| {
        let out = common::pipe(d, &["plan", "su2022.yaml", "--profile", "smoke", "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan json");
        rows.as_array()
            .expect("rows")
            .iter()
            .map(|r| (r["stage"].to_string(), r["key"].to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(dir.path()), keys(local_dir.path()));
    let local_report = std::fs::read_to_string(local_dir.path().join("reports/su2022/report.md"))
        .expect("local report");
    assert_eq!(report, local_report, "the same report from both executors");
    // nothing left to run, locally or on the cluster
    let plan = text(&run(&["plan", "su2022.yaml", "--profile", "smoke"]));
    assert!(plan.contains("0 to run"), "{plan}");
}

#[test]
fn a_node_that_cannot_see_the_cache_stops_the_run_with_why() {
    let Some(_) = cluster_or_skip("slurm cache not shared") else {
        return;
    };
    // A node without the shared folder, made real on this one: the job's worker runs in a
    // mount namespace where the cache folder is an empty tmpfs.
    let probe = tempfile::tempdir().expect("tempdir");
    let unshare = Command::new("unshare")
        .args(["-m", "mount", "-t", "tmpfs", "none"])
        .arg(probe.path())
        .status();
    if !unshare.is_ok_and(|s| s.success()) {
        println!("SKIPPED: slurm cache not shared: `unshare -m mount` is not allowed here");
        return;
    }
    let p = Project::new();
    p.write("d.yaml", DIAMOND);
    let cache = p.path().join("cache");
    let wrapper = p.path().join("node-without-share.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare -m sh -c 'mount -t tmpfs none \"$0\" && exec \"$@\"' '{}' '{}' \"$@\"\n",
            cache.display(),
            env!("CARGO_BIN_EXE_pipe")
        ),
    )
    .expect("write wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = p.pipe(
        "cache",
        &[
            "run",
            "d.yaml",
            "--executor",
            "slurm",
            "--worker-bin",
            &wrapper.to_string_lossy(),
        ],
    );
    let log = text(&out);
    assert_eq!(out.status.code(), Some(4), "{log}");
    assert!(
        log.contains("could not see the cache folder")
            && log.contains("file system every node shares"),
        "{log}"
    );
    let plan = p.plan("cache", "d.yaml");
    assert!(plan.values().all(|(_, status)| status == "run"), "{plan:?}");
}
