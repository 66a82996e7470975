//! The exit codes of `pipe`, one per class of outcome, so a script can tell a bad pipeline
//! from a busy cache from a failed stage (README "Exit codes", `pipe --help`).

use std::process::ExitCode;

use crate::cache::CacheError;
use crate::model::fused::SimdLevelError;
use crate::model::ModelError;
use crate::pipeline::PipelineError;

/// How a `pipe` command ended, as its exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Success = 0,
    /// 1: `run`: a stage failed (its descendants were skipped, independent branches ran);
    /// `cache verify`: corrupt files were found (and dropped); `cache push` / `pull`: a
    /// damaged file was found (that result left out, the others copied).
    StageFailed = 1,
    /// 2: the pipeline or the command line is wrong (YAML, keys, params, inputs, profiles,
    /// cycles, flags, a `--device` this build or machine lacks, `PIPE_SIMD`): nothing ran.
    /// clap's usage errors also exit 2.
    BadInput = 2,
    /// 3: another `pipe` process holds the cache (use another `--cache`, or wait).
    CacheBusy = 3,
    /// 4: anything else: I/O, a damaged cache index (`pipe cache rebuild-index` rebuilds
    /// it), a failed download, a model that does not load. (A panic, a bug in pipe, exits
    /// 101.)
    Failed = 4,
}

impl Exit {
    /// The class of `error`, from the first typed cause in its chain that says.
    pub fn of(error: &anyhow::Error) -> Exit {
        for cause in error.chain() {
            let bad_device = matches!(
                cause.downcast_ref::<ModelError>(),
                Some(ModelError::Device { .. })
            );
            if cause.is::<PipelineError>() || cause.is::<SimdLevelError>() || bad_device {
                return Exit::BadInput;
            }
            if let Some(CacheError::Busy { .. }) = cause.downcast_ref::<CacheError>() {
                return Exit::CacheBusy;
            }
        }
        Exit::Failed
    }

    /// As a process exit code.
    pub fn code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// The table printed under `pipe --help`.
pub const EXIT_CODES_HELP: &str = "\
Environment:
  PIPE_CACHE      the cache folder (as --cache)
  PIPE_MIRROR     folders searched first for fetched files (colon-separated)
  PIPE_SIMD       avx2 | baseline: lower pipe's own CPU kernels (a comparison)
  PIPE_TIMINGS=1  print each phase's time and resident memory on stderr
  PIPE_MAX_CELLS  the most stage instances a pipeline may expand to
  PIPE_REMOTE     the results remote of `pipe cache push --to` / `pull --from`

Exit codes:
  0  done
  1  a stage failed (run), corrupt files found (cache verify, push, pull)
  2  the pipeline or the command line is wrong; nothing ran
  3  another pipe process holds the cache
  4  any other error (I/O, a damaged cache index: see `pipe cache rebuild-index`,
     download, model loading)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_class_through_context() {
        let spec = anyhow::Error::from(PipelineError::new("p.yaml", 3, 5, "unknown kind"))
            .context("loading p.yaml");
        assert_eq!(Exit::of(&spec), Exit::BadInput);
        let busy = anyhow::Error::from(CacheError::Busy {
            dir: "cache".into(),
            holder: " (pid 7)".into(),
        });
        assert_eq!(Exit::of(&busy), Exit::CacheBusy);
        let io = anyhow::Error::from(CacheError::Io {
            path: "cache/blobs".into(),
            source: std::io::Error::other("disk full"),
        });
        assert_eq!(Exit::of(&io), Exit::Failed);
        assert_eq!(Exit::of(&anyhow::anyhow!("anything")), Exit::Failed);
    }
}
