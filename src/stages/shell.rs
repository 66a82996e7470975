//! `shell`: runs a command with declared outputs — glue for users, like DVC's `cmd`.
//!
//! The command runs with `sh -c` in a fresh scratch directory. It finds its inputs in
//! environment variables `PIPE_IN_<NAME>` (name upper-cased, other characters `_`; a
//! family of several artifacts is `:`-separated, and also `PIPE_IN_<NAME>_<i>`; past
//! 64 KiB of paths only the list below), `PIPE_IN_<NAME>_LIST` (a file with the paths one
//! per line, for inputs of any size) and `PIPE_IN_<NAME>_COUNT`, may
//! write directly into `$PIPE_OUT`, and files it lists under `outs:` (relative to the
//! scratch dir) are collected into the output. `$PIPE_PROJECT` is the directory `pipe`
//! was started in. Files under `deps:` (relative to that directory) are hashed at plan
//! time, so editing them reruns the stage.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{InputContract, ParamError, Stage, StageCtx, StageError};

/// Params of `shell`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellParams {
    /// The command line, run by `sh -c`.
    pub cmd: String,
    /// Files or folders the command creates (relative to its working dir).
    #[serde(default)]
    pub outs: Vec<String>,
    /// Local files or folders whose content the command depends on.
    #[serde(default)]
    pub deps: Vec<String>,
    /// Extra environment variables (scalars; a matrix can sweep them as `env.NAME`).
    #[serde(default)]
    pub env: BTreeMap<String, serde_json::Value>,
}

/// Runs a shell command.
pub struct ShellStage;

fn env_name(input: &str) -> String {
    input
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Hashes a file or a folder tree (relative paths + contents) for the plan.
fn tree_hash(path: &Path, hasher: &mut blake3::Hasher) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for e in entries {
            hasher.update(e.file_name().unwrap_or_default().as_encoded_bytes());
            hasher.update(&[0]);
            tree_hash(&e, hasher)?;
        }
    } else {
        let (h, _) = crate::cache::hash_file(path)?;
        hasher.update(h.as_bytes());
    }
    Ok(())
}

/// Moves an `outs:` file or folder into the output (copied where a rename cannot be made);
/// a symbolic link is refused, never followed (see the cache's commit). `kind` is `src`'s
/// own type, not its target's, as the caller read it (a folder's entries from the listing).
fn move_tree(src: &Path, kind: std::fs::FileType, dest: &Path) -> std::io::Result<()> {
    if kind.is_symlink() {
        return Err(std::io::Error::other(
            "a symbolic link: outputs are regular files (links are never followed)",
        ));
    }
    if kind.is_dir() {
        std::fs::create_dir_all(dest)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            move_tree(&e.path(), e.file_type()?, &dest.join(e.file_name()))?;
        }
        Ok(())
    } else {
        // the working folder and the staged outputs share a file system: a rename, no copy
        // (the folder of a declared output in a subfolder is made when the rename finds none)
        crate::cache::with_parent(dest, || std::fs::rename(src, dest))
            .or_else(|_| std::fs::copy(src, dest).map(|_| ()))
    }
}

/// Writes `arts`' paths to `list`, one per line.
fn write_listing(list: &Path, arts: &[super::InputArtifact]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(list)?);
    for a in arts {
        out.write_all(a.path.as_os_str().as_encoded_bytes())?;
        out.write_all(b"\n")?;
    }
    out.into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    Ok(())
}

/// The last 64 KiB of the file at `path` as text (empty when unreadable): enough for the
/// tail of a failed command's stderr, however long its log.
fn read_end(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MOST: u64 = 64 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MOST)));
    let mut bytes = Vec::new();
    let _ = file.take(MOST).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Stage for ShellStage {
    const KIND: &'static str = "shell";
    const VERSION: u32 = 1;
    type Params = ShellParams;
    const INPUTS: InputContract = InputContract::Open;

    fn check(p: &ShellParams) -> Result<(), ParamError> {
        if p.cmd.trim().is_empty() {
            return Err(ParamError::new("cmd", "must not be empty"));
        }
        for o in &p.outs {
            if o.starts_with('/') || o.split('/').any(|c| c == "..") {
                return Err(ParamError::new(
                    "outs",
                    format!("`{o}` must be a relative path inside the working dir"),
                ));
            }
        }
        Ok(())
    }

    fn fingerprint(p: &ShellParams) -> Result<Option<String>, ParamError> {
        if p.deps.is_empty() {
            return Ok(None);
        }
        let mut hasher = blake3::Hasher::new();
        for d in &p.deps {
            let path = Path::new(d);
            hasher.update(d.as_bytes());
            hasher.update(&[0]);
            tree_hash(path, &mut hasher)
                .map_err(|e| ParamError::new("deps", format!("`{d}`: {e}")))?;
        }
        Ok(Some(hasher.finalize().to_hex().to_string()))
    }

    fn run(ctx: &mut StageCtx, p: &ShellParams) -> Result<(), StageError> {
        /// Past this, `$PIPE_IN_<NAME>` and `$PIPE_IN_<NAME>_<i>` are left out (read
        /// `$PIPE_IN_<NAME>_LIST`): well under Linux's 128 KiB per environment string.
        const MAX_JOINED_INPUT_BYTES: usize = 64 * 1024;
        let workdir = ctx.scratch.join("work");
        std::fs::create_dir_all(&workdir).map_err(|e| StageError::io(&workdir, e))?;
        let project = std::env::current_dir().map_err(|e| StageError::io(".", e))?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&p.cmd)
            .current_dir(&workdir)
            .env("PIPE_OUT", &ctx.out_dir)
            .env("PIPE_STAGE", &ctx.name)
            .env("PIPE_PROJECT", &project)
            .stdin(Stdio::null());
        // what this stage puts in its scratch folder, removed again once the command is done
        let mut scratch_files = Vec::with_capacity(ctx.inputs.by_name.len() + 2);
        for (name, arts) in &ctx.inputs.by_name {
            let var = format!("PIPE_IN_{}", env_name(name));
            // Always: a file listing the paths one per line, for inputs of any size; written
            // as it goes (a table reading 50,000 cells held three copies of its paths, #27).
            let list = ctx.scratch.join(format!("inputs-{}.list", env_name(name)));
            write_listing(&list, arts).map_err(|e| StageError::io(&list, e))?;
            scratch_files.push(list.clone());
            cmd.env(format!("{var}_LIST"), &list);
            cmd.env(format!("{var}_COUNT"), arts.len().to_string());
            // The colon-joined form and one variable per path only while they fit: Linux
            // caps one environment string at 128 KiB (a 2,000-way fan-in passes that), and
            // `sh` would not start at all.
            let joined_len = arts
                .iter()
                .map(|a| a.path.as_os_str().len() + 1)
                .sum::<usize>()
                .saturating_sub(1);
            if joined_len <= MAX_JOINED_INPUT_BYTES {
                let paths: Vec<&std::ffi::OsStr> =
                    arts.iter().map(|a| a.path.as_os_str()).collect();
                cmd.env(&var, paths.join(std::ffi::OsStr::new(":")));
                for (i, path) in paths.iter().enumerate() {
                    cmd.env(format!("{var}_{i}"), path);
                }
            }
        }
        for (k, v) in &p.env {
            match v {
                serde_json::Value::String(text) => cmd.env(k, text),
                other => cmd.env(k, other.to_string()),
            };
        }
        // the command writes its output to files in the scratch folder, not into pipes that
        // this process would poll and copy: a long log never sits in memory, and a trivial
        // stage costs fewer system calls and wake-ups (#27)
        let stdout_log = ctx.scratch.join("stdout.log");
        let stderr_log = ctx.scratch.join("stderr.log");
        let log_file =
            |path: &Path| std::fs::File::create(path).map_err(|e| StageError::io(path, e));
        // its own process group, so that an interrupted run stops the command and whatever
        // it started (a terminal's Ctrl-C reaches pipe, which stops them here)
        cmd.stdout(log_file(&stdout_log)?)
            .stderr(log_file(&stderr_log)?);
        let own_group = OWN_PROCESS_GROUPS.load(Ordering::Relaxed);
        if own_group {
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .map_err(|e| StageError::Failed(format!("cannot start `sh`: {e}")))?;
        // the group is the command's own pid (`process_group(0)`)
        let group = libc::pid_t::try_from(child.id()).ok().filter(|_| own_group);
        let status = wait_unless_cancelled(child, group, ctx)?;
        if !status.success() {
            return Err(StageError::Command {
                status: status.to_string(),
                stderr_tail: tail(&read_end(&stderr_log), 20),
            });
        }
        for o in &p.outs {
            let (src, dest) = (workdir.join(o), ctx.out_dir.join(o));
            match std::fs::symlink_metadata(&src) {
                Ok(meta) => {
                    move_tree(&src, meta.file_type(), &dest).map_err(|e| StageError::io(&src, e))?
                }
                // gone with a declared folder that holds it, moved before
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && dest.exists() => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StageError::Failed(format!(
                        "declared output `{o}` was not produced by the command"
                    )))
                }
                Err(e) => return Err(StageError::io(&src, e)),
            }
        }
        // Leaves the scratch folder empty where the command left nothing else: the
        // executor then removes the staging folder without reading it (a walk of it was
        // ~35 system calls of a trivial stage's ~170, #27).
        scratch_files.extend([stdout_log, stderr_log]);
        for file in &scratch_files {
            let _ = std::fs::remove_file(file);
        }
        let _ = std::fs::remove_dir(&workdir);
        Ok(())
    }
}

/// Whether each command gets a process group of its own (a local run, which stops them
/// itself when interrupted); see [`share_process_group`].
static OWN_PROCESS_GROUPS: AtomicBool = AtomicBool::new(true);

/// Commands from now on stay in this process's group: on a Slurm node, where the
/// scheduler's signals (`scancel`) go to the job's processes, and a tracking by process
/// group (`proctrack/pgid`) would lose a command that left it.
pub fn share_process_group() {
    OWN_PROCESS_GROUPS.store(false, Ordering::Relaxed);
}

/// The process groups of the shell commands running now, so that an interrupted run
/// stops them: a stage waits for its command without polling (a trivial stage's cost,
/// #27), and [`stop_running_commands`] ends the wait.
static RUNNING_GROUPS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

/// Waits for the command; if the run is interrupted first (or while it runs), its
/// process group `pgid` (where it has one of its own) is stopped and the stage fails as
/// interrupted.
fn wait_unless_cancelled(
    mut child: Child,
    pgid: Option<libc::pid_t>,
    ctx: &StageCtx,
) -> Result<ExitStatus, StageError> {
    if let Some(pgid) = pgid {
        running_groups().push(pgid);
    }
    // registered before the flag is read: an interrupt either sees this group or is seen here
    if ctx.check_cancelled().is_err() {
        if let Some(pgid) = pgid {
            stop_group(pgid);
        }
    }
    let status = child.wait();
    if let Some(pgid) = pgid {
        running_groups().retain(|&g| g != pgid);
    }
    ctx.check_cancelled()?;
    status.map_err(|e| StageError::Failed(format!("waiting for `sh`: {e}")))
}

fn running_groups() -> std::sync::MutexGuard<'static, Vec<libc::pid_t>> {
    RUNNING_GROUPS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Stops every shell command running now (an interrupted run; its stages' cancel flag is
/// set first): SIGTERM to each command's process group, SIGKILL to any still there 2 s later.
pub fn stop_running_commands() {
    let groups = running_groups().clone();
    if groups.is_empty() {
        return;
    }
    for &pgid in &groups {
        // SAFETY: a signal to a process group a shell stage created (`process_group(0)`).
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
    }
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        for pgid in groups {
            // what is left of the group (the command may have started others)
            // SAFETY: as above; a group already gone makes this a no-op (ESRCH).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    });
}

/// Stops one command's process group at once.
fn stop_group(pgid: libc::pid_t) {
    // SAFETY: a signal to the process group this stage created (`process_group(0)`).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_shell_safe() {
        assert_eq!(env_name("corpus"), "CORPUS");
        assert_eq!(env_name("my-model.v2"), "MY_MODEL_V2");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\nd", 2), "c\nd");
        assert_eq!(tail("a", 5), "a");
    }
}
