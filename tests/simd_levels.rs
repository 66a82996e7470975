//! One binary for every x86-64 CPU: the fused kernels run at the widest SIMD level the CPU
//! has (AVX-512, AVX2 + FMA, the baseline) and the `gemm` crate picks its own kernels the
//! same way. This checks, at every level this CPU can run:
//!
//! 1. each fused kernel (forward and gradient) against its reference form within 1e-5;
//! 2. that every level gives the same bits (the kernels ask for no fused multiply-add, so
//!    only the register width differs) — so results cached by one build or CPU stay valid;
//! 3. the first 20 losses of a training run, equal across levels;
//! 4. the same training run on a CPU without AVX-512 — `qemu-x86_64 -cpu max` emulates one
//!    with AVX2 and FMA — where gemm takes its AVX2 kernels too, against this CPU's losses.
//!    Skipped, saying so, where `qemu-x86_64` is not installed (`.ci/run` installs it).
//!
//! A test binary without libtest's harness: the level is process-wide, so the checks run
//! in turn, and the emulated run re-executes this binary with `--losses-to FILE`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use burn::module::Param;
use burn::nn::{DropoutConfig, LayerNormConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};

use common::training_run::first_losses;
use pipe::model::fused::{self, with_reference_kernels, SimdLevel};
use pipe::train::rng::with_backend_seed;

const TOLERANCE: f32 = 1e-5;
/// A kernel output or gradient and what it is.
type Named = (String, Vec<f32>);
/// Losses on an emulated CPU against this one's: gemm's AVX2 and AVX-512 kernels may block
/// the summed dimension differently, so rounding may differ (as `fused_parity` allows).
const LOSS_TOLERANCE: f32 = 1e-4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--losses-to") {
        let out = PathBuf::from(&args[at + 1]);
        let losses = first_losses();
        std::fs::write(&out, serde_json::to_string(&losses).unwrap()).unwrap();
        return;
    }
    let detected = SimdLevel::detected();
    println!("simd_levels: this CPU: {detected}");
    let mut widest: Option<(SimdLevel, Vec<Named>, Vec<f32>)> = None;
    for level in SimdLevel::ALL.into_iter().rev().filter(|&l| l <= detected) {
        SimdLevel::force(level).unwrap();
        let fused = kernel_outputs();
        let reference = with_reference_kernels(kernel_outputs);
        for ((what, f), (_, r)) in fused.iter().zip(&reference) {
            let worst = max_relative_difference(f, r);
            assert!(
                worst <= TOLERANCE,
                "{level}: {what} differs from its reference form by {worst}"
            );
        }
        let losses = first_losses();
        let compared = match &widest {
            None => "the widest level here".to_string(),
            Some((top, _, _)) => format!("the same bits as {top}"),
        };
        match &widest {
            None => widest = Some((level, fused, losses)),
            Some((top, top_fused, top_losses)) => {
                for ((what, a), (_, b)) in fused.iter().zip(top_fused) {
                    assert!(
                        a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{what}: {level} and {top} differ (max {})",
                        max_relative_difference(a, b)
                    );
                }
                assert_eq!(&losses, top_losses, "losses at {level} and {top}");
            }
        }
        println!(
            "simd_levels: {level}: every kernel within {TOLERANCE:e} of its reference form; {compared}"
        );
    }
    let (_, _, native) = widest.expect("the baseline level always runs");
    emulated_avx2_cpu(&native);
    println!("simd_levels: ok");
}

/// The training run on an emulated CPU with AVX2 and no AVX-512, against `native`.
fn emulated_avx2_cpu(native: &[f32]) {
    let Some(qemu) = on_path("qemu-x86_64") else {
        println!(
            "simd_levels: SKIPPED the emulated AVX2 CPU: qemu-x86_64 is not installed \
             (Debian: apt-get install qemu-user)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("losses.json");
    let me = std::env::current_exe().unwrap();
    // `-cpu max` is every feature TCG emulates: AVX2 and FMA, no AVX-512.
    let status = Command::new(&qemu)
        .args(["-cpu", "max"])
        .arg(&me)
        .arg("--losses-to")
        .arg(&out)
        .env_remove("PIPE_SIMD")
        .status()
        .unwrap();
    assert!(status.success(), "the emulated run failed: {status}");
    let emulated: Vec<f32> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(emulated.len(), native.len());
    let worst = native
        .iter()
        .zip(&emulated)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= LOSS_TOLERANCE,
        "losses on the emulated AVX2 CPU differ by {worst}\nnative   {native:?}\nemulated {emulated:?}"
    );
    let same_bits = native
        .iter()
        .zip(&emulated)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    println!(
        "simd_levels: emulated AVX2 CPU (qemu -cpu max): {} losses within {worst:e} of this CPU's{}",
        native.len(),
        if same_bits { ", the same bits" } else { "" }
    );
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn max_relative_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0f32, f32::max)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Fixed random inputs (the same at every call).
fn random<const D: usize>(seed: u64, shape: [usize; D], std: f64) -> Tensor<D> {
    let device = Device::flex();
    with_backend_seed(&device, seed, || {
        Tensor::random(shape, Distribution::Normal(0.0, std), &device)
    })
}

fn tracked<const D: usize>(x: &Tensor<D>) -> Tensor<D> {
    Tensor::from_data(x.to_data(), &Device::flex().autodiff()).require_grad()
}

/// The additive padding mask `[B, 1, 1, T]` for sequences of `lengths` padded to `t`.
fn padding_mask(lengths: &[usize], t: usize, device: &Device) -> Tensor<4> {
    let bias: Vec<f32> = lengths
        .iter()
        .flat_map(|&len| (0..t).map(move |i| if i < len { 0.0 } else { -1e4 }))
        .collect();
    Tensor::from_data(TensorData::new(bias, [lengths.len(), 1, 1, t]), device)
}

/// Every fused kernel's output and gradients on fixed inputs, with padded positions and
/// shapes large enough to be split over the rayon pool.
fn kernel_outputs() -> Vec<Named> {
    let mut out = Vec::new();
    let ad = Device::flex().autodiff();

    let x = random(1, [4, 33, 200], 3.0);
    let w = random(2, [4, 33, 200], 1.0);
    let xt = tracked(&x);
    let y = fused::gelu(xt.clone());
    let grads = (y.clone() * Tensor::from_data(w.to_data(), &ad))
        .sum()
        .backward();
    out.push(("gelu".into(), values(y.inner())));
    out.push(("gelu backward".into(), values(xt.grad(&grads).unwrap())));

    let (b, h, t) = (3, 4, 37);
    let lengths = [37, 20, 1];
    let scores = random(3, [b, h, t, t], 4.0);
    let w = random(4, [b, h, t, t], 1.0);
    let mask = padding_mask(&lengths, t, &ad);
    let st = tracked(&scores);
    let p = fused::masked_softmax(st.clone(), mask);
    let grads = (p.clone() * Tensor::from_data(w.to_data(), &ad))
        .sum()
        .backward();
    out.push(("masked softmax".into(), values(p.inner())));
    out.push((
        "masked softmax backward".into(),
        values(st.grad(&grads).unwrap()),
    ));

    let (heads, d_head) = (4, 16);
    let [q, k, v] = [5, 6, 7].map(|seed| random(seed, [b, t, heads * d_head], 2.0));
    let mask = padding_mask(&lengths, t, &Device::flex());
    let o = fused::attention(q.clone(), k.clone(), v.clone(), mask, heads);
    out.push(("attention".into(), values(o)));

    // attention while training: dropout on the probabilities, gradients for q, k and v
    let dropout = DropoutConfig::new(0.1).init();
    let w = random(14, [b, t, heads * d_head], 1.0);
    let [qt, kt, vt] = [&q, &k, &v].map(tracked);
    let o = with_backend_seed(&ad, 15, || {
        let mask = padding_mask(&lengths, t, &ad);
        fused::training_attention(qt.clone(), kt.clone(), vt.clone(), mask, heads, &dropout)
    });
    let grads = (o.clone() * Tensor::from_data(w.to_data(), &ad))
        .sum()
        .backward();
    out.push(("training attention".into(), values(o.inner())));
    for (what, x) in [("dq", &qt), ("dk", &kt), ("dv", &vt)] {
        out.push((
            format!("training attention {what}"),
            values(x.grad(&grads).unwrap()),
        ));
    }

    let d = 96;
    let x = random(8, [5, 17, d], 2.0).add_scalar(0.5);
    let w = random(9, [5, 17, d], 1.0);
    let mut ln = LayerNormConfig::new(d).with_epsilon(1e-12).init(&ad);
    ln.gamma = Param::from_tensor(Tensor::from_data(
        random(10, [d], 1.0).add_scalar(1.0).to_data(),
        &ad,
    ));
    let xt = tracked(&x);
    let y = fused::layer_norm(&ln, 1e-12, xt.clone());
    let grads = (y.clone() * Tensor::from_data(w.to_data(), &ad))
        .sum()
        .backward();
    out.push(("layer norm".into(), values(y.inner())));
    out.push((
        "layer norm backward".into(),
        values(xt.grad(&grads).unwrap()),
    ));
    out.push((
        "layer norm dgamma".into(),
        values(ln.gamma.grad(&grads).unwrap()),
    ));

    let (lb, lt, ld) = (16, 9, 48);
    let x_proj = random(11, [lb, lt, 4 * ld], 1.5);
    let w_hh = random(12, [ld, 4 * ld], 0.5);
    let w = random(13, [lb, lt, ld], 1.0);
    let (xt, wt) = (tracked(&x_proj), tracked(&w_hh));
    let hs = fused::lstm(xt.clone(), wt.clone());
    let grads = (hs.clone() * Tensor::from_data(w.to_data(), &ad))
        .sum()
        .backward();
    out.push(("lstm".into(), values(hs.inner())));
    out.push(("lstm dx_proj".into(), values(xt.grad(&grads).unwrap())));
    out.push(("lstm dW_hh".into(), values(wt.grad(&grads).unwrap())));
    out
}
