//! `pipe bench engine`: the engine's own cost on a generated pipeline of N trivial `shell`
//! stages in one of three shapes. Each step (cold run, no-op rerun, `plan`, rerun after one
//! leaf changed) runs as a child `pipe` process, timed from spawn to exit, with its peak
//! resident memory from `wait4`; the no-op and `plan` figures come after one untimed no-op
//! (the steady state: the first command after a change stores the expansion), and beside
//! the cold run the start-up floor (the same number of `sh` started, with no engine). It
//! prints figures; it is a benchmark, not a test.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::args::{EngineBenchOpts, EngineShape};
use super::bench::{compare_tools, ToolFigures};

/// One stage of the generated DAG (in topological order).
pub(super) struct Node {
    pub name: String,
    /// The text the stage writes to its output `o`.
    pub text: String,
    /// Indices of the stages it reads.
    pub parents: Vec<usize>,
}

/// The generated DAG, with the pipe YAML that expands to it.
pub(super) struct Dag {
    pub nodes: Vec<Node>,
    pub yaml: String,
}

/// Level sizes of the fan shape for `n` stages: 1 root, fan-out to 1% and 9%, the bulk,
/// then a 10% fan-in (each reads 8 stages of the bulk).
fn fan_levels(n: usize) -> [usize; 5] {
    let l1 = (n / 100).max(1);
    let l2 = (n * 9 / 100).max(1);
    let l4 = (n / 10).max(1);
    let l3 = n.saturating_sub(1 + l1 + l2 + l4).max(1);
    [1, l1, l2, l3, l4]
}

/// A flat stage of the generated YAML.
fn flat_stage(y: &mut String, nodes: &[Node], node: &Node) {
    let _ = writeln!(
        y,
        "  {}:\n    kind: shell\n    params:\n      cmd: \"echo {} > o\"\n      outs: [o]",
        node.name, node.text
    );
    if !node.parents.is_empty() {
        let ups: Vec<&str> = node
            .parents
            .iter()
            .map(|&p| nodes[p].name.as_str())
            .collect();
        let _ = writeln!(y, "    inputs:\n      up: [{}]", ups.join(", "));
    }
}

fn flat_yaml(nodes: &[Node]) -> String {
    let mut y = String::from("stages:\n");
    for node in nodes {
        flat_stage(&mut y, nodes, node);
    }
    y
}

/// The DAG of `shape` with `n` stages; `changed` is appended to the last stage's text (a
/// leaf: nothing reads it).
pub(super) fn generate(shape: EngineShape, n: usize, changed: Option<&str>) -> Dag {
    let n = n.max(4);
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    let yaml = match shape {
        EngineShape::Fan => {
            let sizes = fan_levels(n);
            let mut first = [0usize; 5];
            for (l, &size) in sizes.iter().enumerate() {
                first[l] = nodes.len();
                for i in 0..size {
                    let parents = match l {
                        0 => Vec::new(),
                        4 => (0..8).map(|k| first[3] + (i * 8 + k) % sizes[3]).collect(),
                        _ => vec![first[l - 1] + i % sizes[l - 1]],
                    };
                    nodes.push(Node {
                        name: format!("l{l}_{i}"),
                        text: format!("{l}-{i}"),
                        parents,
                    });
                }
            }
            None
        }
        EngineShape::Chain => {
            for i in 0..n {
                nodes.push(Node {
                    name: format!("s{i}"),
                    text: format!("{i}"),
                    parents: if i == 0 { Vec::new() } else { vec![i - 1] },
                });
            }
            None
        }
        EngineShape::Matrix => {
            // root → prep[i] → train[i] (cell to cell) → table (reads every train cell)
            let k = (n - 2) / 2;
            nodes.push(Node {
                name: "root".into(),
                text: "root".into(),
                parents: Vec::new(),
            });
            for i in 0..k {
                nodes.push(Node {
                    name: format!("prep_{i}"),
                    text: format!("prep {i}"),
                    parents: vec![0],
                });
            }
            for i in 0..k {
                nodes.push(Node {
                    name: format!("train_{i}"),
                    text: format!("train {i}"),
                    parents: vec![1 + i],
                });
            }
            nodes.push(Node {
                name: "table".into(),
                text: "table".into(),
                parents: (1 + k..1 + 2 * k).collect(),
            });
            Some(format!(
                "stages:\n  root:\n    kind: shell\n    params:\n      cmd: \"echo root > o\"\n      outs: [o]\n  \
                 prep:\n    kind: shell\n    params:\n      cmd: \"echo prep $I > o\"\n      outs: [o]\n    \
                 matrix:\n      env.I: {{range: {k}}}\n    inputs:\n      up: root\n  \
                 train:\n    kind: shell\n    params:\n      cmd: \"echo train $I > o\"\n      outs: [o]\n    \
                 matrix:\n      env.I: {{range: {k}}}\n    inputs:\n      up: prep\n  \
                 table:\n    kind: shell\n    params:\n      cmd: \"echo table{} > o\"\n      outs: [o]\n    \
                 inputs:\n      up: train\n",
                changed.unwrap_or("")
            ))
        }
    };
    if let (Some(changed), Some(last)) = (changed, nodes.last_mut()) {
        last.text.push_str(changed);
    }
    let yaml = yaml.unwrap_or_else(|| flat_yaml(&nodes));
    Dag { nodes, yaml }
}

/// One timed child process.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Step {
    pub step: &'static str,
    pub seconds: f64,
    /// CPU seconds (user + system) of the child and of the processes it started.
    pub cpu_seconds: f64,
    /// CPU seconds of the `pipe` process alone, all its threads, none of its `sh`s
    /// (`None` where `/proc` does not say).
    pub pipe_cpu_seconds: Option<f64>,
    /// CPU seconds of its main thread alone, the scheduler's: the part of a cold run that
    /// more cores do not divide (`None` where `/proc` does not say).
    pub scheduler_cpu_seconds: Option<f64>,
    /// Peak resident set of the child (`ru_maxrss`), KiB.
    pub peak_rss_kib: u64,
    /// Stages that ran (`plan`: would run) and were found cached.
    pub ran: usize,
    pub cached: usize,
}

/// What [`measure`] saw of one child process.
pub(super) struct Measured {
    /// Wall seconds from spawn to exit.
    pub seconds: f64,
    /// CPU seconds (user + system) of the child and of the processes it waited for.
    pub cpu_seconds: f64,
    /// CPU seconds of the child alone ([`own_cpu_seconds`]).
    pub own_cpu_seconds: Option<f64>,
    /// CPU seconds of the child's main thread alone.
    pub main_thread_cpu_seconds: Option<f64>,
    /// Its peak resident set (`ru_maxrss`), KiB.
    pub peak_rss_kib: u64,
    pub stdout: String,
}

/// User + system seconds of the exited, not yet reaped process `pid` itself (all its
/// threads, not its children), from `/proc/PID/stat` (Linux; `None` elsewhere): the
/// engine's own CPU in a cold run, which the run's total mixes with its processes' and
/// the start-up floor measures only to within a tenth run to run (#27).
fn own_cpu_seconds(pid: libc::pid_t) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// User + system seconds of the main thread alone of the exited, not yet reaped process
/// `pid` (its thread-group leader stays until the reaping, with its own figures).
fn main_thread_cpu_seconds(pid: libc::pid_t) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/task/{pid}/stat"))
}

/// User + system seconds from a `/proc` `stat` file (a process's or one thread's).
fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // after the command name (which may hold spaces): state, then utime and stime are
    // the 12th and 13th fields
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // SAFETY: `sysconf` only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

/// Runs `cmd` with stdout and stderr to files in `dir`: its wall and CPU seconds, peak
/// RSS and stdout. A nonzero exit is an error (with stderr).
pub(super) fn measure(cmd: &mut Command, dir: &Path) -> Result<Measured> {
    let out_path = dir.join("step.stdout");
    let err_path = dir.join("step.stderr");
    let out = File::create(&out_path).with_context(|| format!("{}", out_path.display()))?;
    let err = File::create(&err_path).with_context(|| format!("{}", err_path.display()))?;
    let t0 = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("starting pipe")?;
    let pid = libc::pid_t::try_from(child.id()).context("child pid")?;
    // waited for without reaping it first, so that its own figures can still be read
    // SAFETY: an all-zero `siginfo_t` is a valid value of this plain C struct, and
    // `waitid` only writes into it; `pid` is our own child.
    let exited = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            libc::id_t::try_from(pid).unwrap_or_default(),
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        ) == 0
    };
    let own_cpu_seconds = exited.then(|| own_cpu_seconds(pid)).flatten();
    let main_thread_cpu_seconds = exited.then(|| main_thread_cpu_seconds(pid)).flatten();
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (`child` is never waited on);
    // `status` and `usage` are valid for writes for the duration of the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = t0.elapsed().as_secs_f64();
    drop(child);
    if reaped != pid {
        bail!("waiting for pipe: {}", std::io::Error::last_os_error());
    }
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail: Vec<&str> = stdout.lines().rev().take(5).collect();
        bail!(
            "pipe failed ({:?}): {}{}",
            cmd,
            stderr.trim(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(Measured {
        seconds,
        // Linux's `wait4` counts the processes the child waited for too: a run's `sh`s
        cpu_seconds: crate::timings::rusage_cpu_seconds(&usage),
        own_cpu_seconds,
        main_thread_cpu_seconds,
        peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        stdout,
    })
}

/// Processes started to measure [`start_up_floor`] (the per-stage figure is their mean).
const FLOOR_SAMPLE: usize = 2000;

/// What starting a stage's process alone costs, a command's share of the wall and CPU
/// seconds of `sample` runs of it.
#[derive(Debug, Clone, Copy)]
struct Floor {
    seconds: f64,
    /// The `sh` and the thread that started it (user + system).
    cpu_seconds: f64,
}

/// CPU seconds (user + system) of this process and of its children waited for so far.
fn own_and_children_cpu() -> f64 {
    crate::timings::cpu_seconds().map_or(0.0, |(own, children)| own + children)
}

/// What starting a stage's process alone costs, the floor under a cold run: `sample`
/// `sh -c "echo I > o"`, each in a fresh folder, `jobs` at a time (as `pipe run` starts
/// stages); per command.
fn start_up_floor(dir: &Path, jobs: usize, sample: usize) -> Result<Floor> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let root = dir.join("start-up-floor");
    let _ = std::fs::remove_dir_all(&root);
    let next = AtomicUsize::new(0);
    let cpu0 = own_and_children_cpu();
    let t0 = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= sample {
                            return Ok(());
                        }
                        let folder = root.join(i.to_string());
                        std::fs::create_dir_all(&folder)?;
                        let status = Command::new("sh")
                            .arg("-c")
                            .arg(format!("echo {i} > o"))
                            .current_dir(&folder)
                            .stdin(Stdio::null())
                            .status()
                            .context("starting sh")?;
                        if !status.success() {
                            bail!("sh -c 'echo {i} > o' failed: {status}");
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a start-up worker panicked"))??;
        }
        Ok(())
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_seconds = own_and_children_cpu() - cpu0;
    let _ = std::fs::remove_dir_all(&root);
    let sample = sample.max(1) as f64;
    Ok(Floor {
        seconds: seconds / sample,
        cpu_seconds: cpu_seconds / sample,
    })
}

/// `ran A, cached B, …` (run) or `A to run, B cached` (plan), from the last lines.
fn counts(stdout: &str) -> (usize, usize) {
    let number = |text: &str, after: &str| -> Option<usize> {
        let at = text.find(after)? + after.len();
        text[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let number_before = |text: &str, before: &str| -> Option<usize> {
        let at = text.find(before)?;
        text[..at].split_whitespace().last()?.parse().ok()
    };
    for line in stdout.lines().rev() {
        if let (Some(ran), Some(cached)) = (number(line, "ran "), number(line, "cached ")) {
            return (ran, cached);
        }
        if let (Some(ran), Some(cached)) = (
            number_before(line, " to run"),
            number_before(line, " cached"),
        ) {
            return (ran, cached);
        }
    }
    (0, 0)
}

/// Where the bench works: the pipeline file and the cache folder.
struct Workspace {
    dir: PathBuf,
    file: PathBuf,
    cache: PathBuf,
    /// Remove `dir` at the end.
    temporary: bool,
    /// The pipe executable timed.
    exe: PathBuf,
}

impl Workspace {
    fn pipe(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--cache")
            .arg(&self.cache)
            .args(args)
            .arg(&self.file);
        Ok(cmd)
    }

    fn step(&self, step: &'static str, args: &[&str]) -> Result<Step> {
        let m = measure(&mut self.pipe(args)?, &self.dir)?;
        let (ran, cached) = counts(&m.stdout);
        Ok(Step {
            step,
            seconds: m.seconds,
            cpu_seconds: m.cpu_seconds,
            pipe_cpu_seconds: m.own_cpu_seconds,
            scheduler_cpu_seconds: m.main_thread_cpu_seconds,
            peak_rss_kib: m.peak_rss_kib,
            ran,
            cached,
        })
    }

    /// The median-time step of `repeat` runs (its own figures), and the largest peak RSS.
    fn median_step(&self, step: &'static str, args: &[&str], repeat: usize) -> Result<Step> {
        let mut steps = (0..repeat.max(1))
            .map(|_| self.step(step, args))
            .collect::<Result<Vec<_>>>()?;
        let peak = steps.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0);
        steps.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let mut median = steps.swap_remove(steps.len() / 2);
        median.peak_rss_kib = peak;
        Ok(median)
    }
}

/// Everything `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    stages: usize,
    shape: String,
    cpu: String,
    cores: usize,
    pipeline_bytes: usize,
    /// Seconds a stage's process start-up alone costs ([`start_up_floor`]).
    start_up_floor_seconds: f64,
    /// Its CPU seconds (the `sh` and the thread that started it).
    start_up_floor_cpu_seconds: f64,
    steps: Vec<Step>,
    tools: Vec<ToolFigures>,
}

pub(super) fn bench_engine(b: &EngineBenchOpts) -> Result<ExitCode> {
    let dag = generate(b.shape, b.stages, None);
    let n = dag.nodes.len();
    let shape = format!("{:?}", b.shape).to_lowercase();
    let exe = match &b.exe {
        Some(exe) => std::path::absolute(exe)?,
        None => std::env::current_exe().context("finding the pipe executable")?,
    };
    let (dir, temporary) = match &b.dir {
        Some(dir) => (std::path::absolute(dir)?, false),
        None => (
            std::env::temp_dir().join(format!("pipe-bench-{}", std::process::id())),
            true,
        ),
    };
    let ws = Workspace {
        file: dir.join("bench.yaml"),
        cache: dir.join("cache"),
        dir,
        temporary,
        exe,
    };
    std::fs::create_dir_all(&ws.dir).with_context(|| format!("{}", ws.dir.display()))?;
    // A kept folder with this very pipeline has a filled cache: reuse it unless `--cold`.
    let same = std::fs::read_to_string(&ws.file).is_ok_and(|t| t == dag.yaml);
    let filled = same && ws.cache.join("index").exists() && !b.cold;
    if !filled {
        let _ = std::fs::remove_dir_all(&ws.cache);
        std::fs::write(&ws.file, &dag.yaml).with_context(|| format!("{}", ws.file.display()))?;
    }
    let cpu = crate::model::fused::simd::cpu_model();
    let cores = num_cpus::get();
    if !b.json {
        println!(
            "engine benchmark: {n} shell stages, shape {shape}, {} bytes of YAML, in {}\n\
             machine: {cpu} ({cores} cores); timing {}",
            dag.yaml.len(),
            ws.dir.display(),
            ws.exe.display()
        );
    }
    // the memory target is a stage's share beyond the pipeline's own text
    let yaml_kib = dag.yaml.len() as f64 / 1024.0;
    let show = |s: &Step| {
        if !b.json {
            println!(
                "{:<18} {:>9.3} s  {:>8.1} µs/stage  peak RSS {:>7.1} MiB ({:>5.2} KiB/stage, \
                 {:.2} beyond the YAML)  ran {}, cached {}",
                s.step,
                s.seconds,
                s.seconds * 1e6 / n as f64,
                s.peak_rss_kib as f64 / 1024.0,
                s.peak_rss_kib as f64 / n as f64,
                (s.peak_rss_kib as f64 - yaml_kib) / n as f64,
                s.ran,
                s.cached
            );
        }
    };
    let mut steps = Vec::new();
    if filled {
        if !b.json {
            println!(
                "(cache filled by an earlier bench in this folder: no cold run; --cold for one)"
            );
        }
    } else {
        let cold = ws.step("cold run", &["run", "--quiet"])?;
        show(&cold);
        steps.push(cold);
    }
    let floor = start_up_floor(&ws.dir, cores, FLOOR_SAMPLE.min(n))?;
    if !b.json {
        let cold = steps
            .first()
            .map(|s| {
                format!(
                    ": the cold run is {:.2}× it",
                    s.seconds / (floor.seconds * n as f64)
                )
            })
            .unwrap_or_default();
        println!(
            "{:<18} {:>9.3} s  {:>8.1} µs/stage  ({} × `sh -c \"echo I > o\"` in fresh folders, \
             {cores} at a time{cold})",
            "start-up floor",
            floor.seconds * n as f64,
            floor.seconds * 1e6,
            FLOOR_SAMPLE.min(n),
        );
        if let Some(cold) = steps.first() {
            println!("{}", engine_share(cold, floor, n, cores));
        }
    }
    // one untimed no-op first: the first command after the pipeline file or the pipe
    // build changed loads it in full and stores its expansion (timed as "one leaf
    // changed"); the no-op and plan figures are the steady state
    ws.step("warm-up", &["run", "--quiet"])?;
    let noop = ws.median_step("no-op run", &["run", "--quiet"], b.repeat)?;
    show(&noop);
    let plan = ws.median_step("plan", &["plan"], b.repeat)?;
    show(&plan);
    steps.push(noop);
    steps.push(plan);
    // a new text each time, so that the leaf runs even in a cache kept from an earlier bench
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let changed = generate(b.shape, b.stages, Some(&format!(" changed {nonce}")));
    std::fs::write(&ws.file, &changed.yaml)?;
    let leaf = ws.step("one leaf changed", &["run", "--quiet"]);
    std::fs::write(&ws.file, &dag.yaml)?;
    let leaf = leaf?;
    show(&leaf);
    steps.push(leaf);

    let tools = if b.tools {
        compare_tools(&dag, &ws.dir.join("tools"), &steps, b.json)?
    } else {
        Vec::new()
    };
    if b.json {
        let report = Report {
            stages: n,
            shape,
            cpu,
            cores,
            pipeline_bytes: dag.yaml.len(),
            start_up_floor_seconds: floor.seconds,
            start_up_floor_cpu_seconds: floor.cpu_seconds,
            steps,
            tools,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if ws.temporary {
        let _ = std::fs::remove_dir_all(&ws.dir);
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a cold run's time goes beside the floor's: the CPU the engine adds a stage (the
/// run's CPU, pipe's and its processes', less the floor's; and `pipe`'s own where known,
/// with its scheduler thread's, which more cores do not divide), and how busy each kept
/// the cores. A cold run bound by process start-up adds little CPU and keeps the cores as
/// busy as the floor does.
fn engine_share(cold: &Step, floor: Floor, n: usize, cores: usize) -> String {
    let n = n.max(1) as f64;
    let busy = |cpu: f64, wall: f64| 100.0 * cpu / (wall * cores.max(1) as f64).max(1e-9);
    let scheduler = cold
        .scheduler_cpu_seconds
        .map(|main| format!(", its scheduler thread's {:.1}", main / n * 1e6))
        .unwrap_or_default();
    let own = cold
        .pipe_cpu_seconds
        .map(|own| format!("pipe's own {:.1} µs a stage{scheduler}; ", own / n * 1e6))
        .unwrap_or_default();
    format!(
        "{:<18} {:>9.3} s  {:>8.1} µs/stage  ({own}CPU of the cold run, pipe and its `sh`s: \
         {:.1} µs a stage, the floor's {:.1}; cores busy {:.0}% in the cold run, {:.0}% in \
         the floor)",
        "engine CPU",
        cold.cpu_seconds - floor.cpu_seconds * n,
        (cold.cpu_seconds / n - floor.cpu_seconds) * 1e6,
        cold.cpu_seconds / n * 1e6,
        floor.cpu_seconds * 1e6,
        busy(cold.cpu_seconds, cold.seconds),
        busy(floor.cpu_seconds, floor.seconds),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_stages_asked_for_in_topological_order() {
        for shape in [EngineShape::Fan, EngineShape::Chain, EngineShape::Matrix] {
            let dag = generate(shape, 1000, None);
            assert!((998..=1000).contains(&dag.nodes.len()), "{shape:?}");
            for (i, node) in dag.nodes.iter().enumerate() {
                assert!(
                    node.parents.iter().all(|&p| p < i),
                    "{shape:?} {}",
                    node.name
                );
            }
            let changed = generate(shape, 1000, Some(" changed"));
            assert_ne!(dag.yaml, changed.yaml);
        }
    }

    #[test]
    fn counts_read_run_and_plan_summaries() {
        assert_eq!(
            counts("x\nran 3, cached 12, failed 0, skipped 0 in 4.2s\n"),
            (3, 12)
        );
        assert_eq!(counts("run s1 ...\n0 to run, 5000 cached\n"), (0, 5000));
    }
}
