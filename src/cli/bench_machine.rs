//! What a benchmark figure was measured on: the CPU, its cores, the SIMD level each kernel
//! family ran at, and the matrix-product speed the `gemm` crate reached there — printed by
//! `pipe bench train` beside its timings, so a figure always says where it came from.

use std::time::Instant;

use serde::Serialize;

use crate::model::fused::simd::{cpu_model, gemm_level, SimdLevel};

/// The MiniLM feed-forward product of a 32 × 128 batch: [B·T, d] · [d, 4d].
const GEMM_SHAPE: (usize, usize, usize) = (4096, 1536, 384);
/// Timed products (after one warm-up); the median is reported.
const GEMM_REPS: usize = 7;

/// The machine behind a benchmark run.
#[derive(Debug, Serialize)]
pub(super) struct MachineFigures {
    pub cpu: String,
    pub cores: usize,
    /// The level of pipe's fused kernels (GELU, softmax, LayerNorm, attention, LSTM).
    pub simd_fused: SimdLevel,
    /// The level the `gemm` crate chose for the matrix products.
    pub simd_gemm: SimdLevel,
    /// `m × n × k` of the timed product.
    pub gemm_shape: [usize; 3],
    /// 2mnk / s over all cores (the median of the timed products).
    pub gemm_gflops: f64,
}

impl MachineFigures {
    /// Reads the CPU and times the feed-forward product (about a second).
    pub fn measure() -> MachineFigures {
        let (m, n, k) = GEMM_SHAPE;
        MachineFigures {
            cpu: cpu_model(),
            cores: num_cpus::get(),
            simd_fused: SimdLevel::active(),
            simd_gemm: gemm_level(),
            gemm_shape: [m, n, k],
            gemm_gflops: gemm_gflops(m, n, k),
        }
    }

    /// One line for the human-readable output.
    pub fn summary(&self) -> String {
        let [m, n, k] = self.gemm_shape;
        format!(
            "machine: {} ({} cores); SIMD: fused kernels {}, gemm {}; gemm {m}×{n}×{k} \
             {:.0} GFLOP/s",
            self.cpu, self.cores, self.simd_fused, self.simd_gemm, self.gemm_gflops
        )
    }
}

/// GFLOP/s of `gemm` for a row-major `[m, k] · [k, n]` over the rayon pool.
fn gemm_gflops(m: usize, n: usize, k: usize) -> f64 {
    let lhs: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01).collect();
    let rhs: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.01).collect();
    let mut dst = vec![0.0f32; m * n];
    let mut product = || {
        // SAFETY: the three buffers are row-major m × k, k × n and m × n, as the strides
        // say, and distinct.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                false,
                lhs.as_ptr(),
                1,
                k as isize,
                rhs.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
    };
    product();
    let mut seconds: Vec<f64> = (0..GEMM_REPS)
        .map(|_| {
            let start = Instant::now();
            product();
            start.elapsed().as_secs_f64()
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    2.0 * (m * n * k) as f64 / seconds[GEMM_REPS / 2] / 1e9
}
