//! Which vector instructions the CPU kernels use, chosen once per process at run time.
//!
//! One binary runs everywhere: the fused kernels are compiled three times (AVX-512, AVX2 +
//! FMA, the x86-64 baseline) and [`SimdLevel::active`] picks the widest the CPU has.
//! `PIPE_SIMD=avx2` (or `baseline`) lowers the choice, so an AVX-512 machine can check the
//! narrower paths; it can never raise it above what the CPU has (that would be undefined
//! behaviour).
//!
//! The matrix products are the `gemm` crate's, which chooses on its own and has no switch:
//! with its `x86-v4` feature (on in this build) it runs its AVX-512 kernels when the CPU has
//! `avx512f`, else its FMA (AVX2) kernels, else scalar ones — gemm-common 0.19.0
//! `src/gemm.rs`, `init_gemm_fn`: `if feature_detected!("avx512f") { return
//! avx512f::gemm_basic; } if feature_detected!("fma") { fma::gemm_basic } else {
//! scalar::gemm_basic }`, resolved once into the `GEMM_PTR` static. [`gemm_level`] says which
//! it picked. `tests/simd_levels.rs` runs a training run under `qemu-x86_64 -cpu max` (an
//! emulated CPU with AVX2 and no AVX-512) to hold that path to the native one.

use std::sync::atomic::{AtomicU8, Ordering};

/// The environment variable that lowers [`SimdLevel::active`].
pub const SIMD_ENV: &str = "PIPE_SIMD";

/// A family of x86-64 vector instructions, ordered narrow to wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SimdLevel {
    /// The x86-64 baseline (SSE2), or a CPU that is not x86-64.
    Baseline,
    /// AVX2 and FMA: 8 f32 lanes.
    Avx2,
    /// AVX-512 F/BW/VL/DQ: 16 f32 lanes.
    Avx512,
}

/// `PIPE_SIMD` names something this build cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimdLevelError {
    #[error("{SIMD_ENV}=`{0}` is not a SIMD level (expected avx512, avx2 or baseline)")]
    Unknown(String),
    #[error(
        "{SIMD_ENV}={requested} asks for more than this CPU has ({detected}); it can only lower the level"
    )]
    AboveCpu {
        requested: SimdLevel,
        detected: SimdLevel,
    },
}

impl SimdLevel {
    /// Every level, narrow to wide.
    pub const ALL: [SimdLevel; 3] = [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512];

    /// The name `PIPE_SIMD` and `bench train --json` use.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Baseline => "baseline",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    fn parse(name: &str) -> Result<SimdLevel, SimdLevelError> {
        Self::ALL
            .into_iter()
            .find(|level| level.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| SimdLevelError::Unknown(name.to_string()))
    }

    /// The widest level this CPU supports.
    pub fn detected() -> SimdLevel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
            {
                return SimdLevel::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Baseline
    }

    /// The level `PIPE_SIMD` asks for (`None` when unset), checked against the CPU.
    pub fn requested() -> Result<Option<SimdLevel>, SimdLevelError> {
        let Some(value) = std::env::var_os(SIMD_ENV) else {
            return Ok(None);
        };
        let requested = Self::parse(&value.to_string_lossy())?;
        let detected = Self::detected();
        if requested > detected {
            return Err(SimdLevelError::AboveCpu {
                requested,
                detected,
            });
        }
        Ok(Some(requested))
    }

    /// The level the fused kernels run at: [`SimdLevel::detected`], lowered by `PIPE_SIMD`
    /// or [`SimdLevel::force`]. Read on every kernel call, so it is one relaxed load after
    /// the first. A bad `PIPE_SIMD` is ignored here (the CLI refuses it at start, with
    /// [`SimdLevel::requested`]'s error).
    #[inline]
    pub fn active() -> SimdLevel {
        match ACTIVE.load(Ordering::Relaxed) {
            UNSET => {
                let level = Self::requested()
                    .ok()
                    .flatten()
                    .unwrap_or_else(Self::detected);
                ACTIVE.store(level as u8, Ordering::Relaxed);
                level
            }
            code => Self::from_code(code),
        }
    }

    /// Makes the fused kernels run at `level` from now on, process-wide (for tests and
    /// benchmarks that compare levels). Refuses a level above what the CPU has.
    pub fn force(level: SimdLevel) -> Result<(), SimdLevelError> {
        let detected = Self::detected();
        if level > detected {
            return Err(SimdLevelError::AboveCpu {
                requested: level,
                detected,
            });
        }
        ACTIVE.store(level as u8, Ordering::Relaxed);
        Ok(())
    }

    fn from_code(code: u8) -> SimdLevel {
        match code {
            2 => SimdLevel::Avx512,
            1 => SimdLevel::Avx2,
            _ => SimdLevel::Baseline,
        }
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Not yet read from the CPU and `PIPE_SIMD` (the levels are 0..=2).
const UNSET: u8 = u8::MAX;
static ACTIVE: AtomicU8 = AtomicU8::new(UNSET);

/// The kernels the `gemm` crate runs on this CPU (its own choice; see the module docs).
pub fn gemm_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        // gemm's `x86-v4` feature is on in this build (Cargo.toml), so its dispatch takes
        // the AVX-512 kernels on `avx512f` alone.
        if std::is_x86_feature_detected!("avx512f") {
            return SimdLevel::Avx512;
        }
        if std::is_x86_feature_detected!("fma") {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Baseline
}

/// The CPU's model name (`/proc/cpuinfo`), so that a figure says where it came from.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_narrow_to_wide() {
        for level in SimdLevel::ALL {
            assert_eq!(SimdLevel::parse(level.name()), Ok(level));
        }
        assert_eq!(SimdLevel::parse(" AVX2 "), Ok(SimdLevel::Avx2));
        assert!(SimdLevel::Baseline < SimdLevel::Avx2 && SimdLevel::Avx2 < SimdLevel::Avx512);
        assert_eq!(
            SimdLevel::parse("sse9"),
            Err(SimdLevelError::Unknown("sse9".into()))
        );
    }

    #[test]
    fn force_refuses_a_level_above_the_cpu() {
        let detected = SimdLevel::detected();
        for level in SimdLevel::ALL.into_iter().filter(|&l| l > detected) {
            assert_eq!(
                SimdLevel::force(level),
                Err(SimdLevelError::AboveCpu {
                    requested: level,
                    detected
                })
            );
        }
    }
}
