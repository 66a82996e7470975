//! The encoder's steps on a GPU (burn's cubecl kernels; fused ones with `--features
//! gpu-fusion`) held to the CPU's fused kernels: GELU, the masked softmax and LayerNorm within 1e-5 (f32) forward
//! and backward; attention, whose products run as TF32 on tensor cores (10-bit mantissa),
//! within 2e-3; the bf16 products of mixed precision within one bf16 rounding of the
//! output (both devices round the operands and the product to bf16, their accumulation
//! orders differ).
//!
//! These run in a `--features cuda` build on a machine with a GPU (`PIPE_TEST_GPU`, default
//! `cuda:0`); elsewhere each test says SKIPPED and passes. On an H200 (session 25, fusion
//! and autotune on): GELU 4.8e-7 / 7.2e-7, LayerNorm 7.2e-7 / 7.2e-7, masked softmax
//! 1.2e-7 / 8.9e-8 (forward / backward), attention 1.0e-3 / 1.9e-3, bf16 product 0.25 at an
//! entry of 91.5 (half a bf16 step).

use burn::nn::{DropoutConfig, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

use pipe::model::fused;
use pipe::model::precision::{self, Precision};

/// The GPU under test, or `None` (with the reason printed) where there is none.
fn gpu() -> Option<Device> {
    let spec = std::env::var("PIPE_TEST_GPU").unwrap_or_else(|_| "cuda:0".into());
    match pipe::model::parse_device(&spec) {
        Ok(device) => Some(device),
        Err(e) => {
            eprintln!("SKIPPED: no GPU to test ({e})");
            None
        }
    }
}

fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<D> {
    let cpu = Device::flex();
    pipe::train::rng::with_backend_seed(&cpu, seed, || {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &cpu)
    })
}

fn on<const D: usize>(x: &Tensor<D>, device: &Device) -> Tensor<D> {
    Tensor::from_data(x.to_data(), device)
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let a = a
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32");
    let b = b
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32");
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `f(x)` and d(Σ f(x) ⊙ w)/dx on `device` (autodiff).
fn value_and_grad<const D: usize>(
    f: &dyn Fn(Tensor<D>) -> Tensor<D>,
    x: &Tensor<D>,
    w: &Tensor<D>,
    device: &Device,
) -> (Tensor<D>, Tensor<D>) {
    let device = device.clone().autodiff();
    let x = on(x, &device).require_grad();
    let y = f(x.clone());
    let grads = (y.clone() * on(w, &device)).sum().backward();
    let dx = x.grad(&grads).expect("gradient of x");
    (y.inner(), dx)
}

fn check_against_cpu<const D: usize>(
    name: &str,
    f: &dyn Fn(Tensor<D>) -> Tensor<D>,
    x: &Tensor<D>,
    tolerance: f32,
    gpu: &Device,
) {
    let w = random(x.dims(), 99);
    let (y_cpu, dx_cpu) = value_and_grad(f, x, &w, &Device::flex());
    let (y_gpu, dx_gpu) = value_and_grad(f, x, &w, gpu);
    let forward = max_abs_diff(y_cpu, y_gpu);
    let backward = max_abs_diff(dx_cpu, dx_gpu);
    eprintln!("{name}: max |GPU − CPU| forward {forward:.2e}, backward {backward:.2e}");
    assert!(forward <= tolerance, "{name} forward: {forward}");
    assert!(backward <= tolerance, "{name} backward: {backward}");
}

#[test]
fn elementwise_steps_match_the_cpu_within_1e_5() {
    let Some(gpu) = gpu() else { return };
    let x: Tensor<3> = random([4, 64, 384], 1);
    check_against_cpu("gelu", &|x| fused::gelu(x), &x, 1e-5, &gpu);
    check_against_cpu(
        "layer_norm",
        &|x: Tensor<3>| {
            let norm = LayerNormConfig::new(384).init(&x.device());
            fused::layer_norm(&norm, 1e-5, x)
        },
        &x,
        1e-5,
        &gpu,
    );
    // the padding mask of two sequences, the second with 24 padded keys
    let mut bias = vec![0.0f32; 2 * 64];
    bias[64 + 40..].iter_mut().for_each(|b| *b = -1.0e4);
    let mask_data = burn::tensor::TensorData::new(bias, [2, 1, 1, 64]);
    let scores: Tensor<4> = random([2, 6, 64, 64], 2);
    check_against_cpu(
        "masked_softmax",
        &|s: Tensor<4>| {
            let mask = Tensor::<4>::from_data(mask_data.clone(), &s.device());
            fused::masked_softmax(s, mask)
        },
        &scores,
        1e-5,
        &gpu,
    );
}

#[test]
fn attention_matches_the_cpu_within_tf32_rounding() {
    let Some(gpu) = gpu() else { return };
    let (b, t, d, heads) = (2, 48, 64, 4);
    let qkv: Tensor<3> = random([b, t, 3 * d], 3);
    let mut bias = vec![0.0f32; b * t];
    bias[t + 30..].iter_mut().for_each(|x| *x = -1.0e4);
    let mask_data = burn::tensor::TensorData::new(bias, [b, 1, 1, t]);
    // dropout 0: the same maths on both devices (their generators differ)
    let dropout = DropoutConfig::new(0.0).init();
    check_against_cpu(
        "training_attention",
        &|x: Tensor<3>| {
            let mask = Tensor::<4>::from_data(mask_data.clone(), &x.device());
            let [q, k, v] = [0, 1, 2].map(|i| x.clone().narrow(2, i * d, d));
            let context = fused::training_attention(q, k, v, mask, heads, &dropout);
            Tensor::cat(vec![context.clone(), context.clone(), context], 2)
        },
        &qkv,
        2e-3,
        &gpu,
    );
}

#[test]
fn bf16_products_match_the_cpu_within_one_rounding() {
    let Some(gpu) = gpu() else { return };
    let a: Tensor<2> = random([256, 384], 4);
    let b: Tensor<2> = random([384, 512], 5);
    let product = |device: &Device| {
        precision::autocast(Precision::Bf16, || {
            precision::matmul(on(&a, device), on(&b, device))
        })
    };
    let scale = product(&Device::flex()).abs().max().into_scalar::<f32>();
    let diff = max_abs_diff(product(&Device::flex()), product(&gpu));
    eprintln!("bf16 matmul: max |GPU − CPU| {diff:.2e} (largest entry {scale:.1})");
    // one unit in the last place of bf16 (8 significant bits) at the largest entry
    assert!(diff <= scale / 128.0, "{diff} of {scale}");
    // and the half products really are rounded: not the f32 product
    let full = max_abs_diff(a.clone().matmul(b.clone()), product(&Device::flex()));
    assert!(full > 1e-3, "bf16 product equals the f32 one ({full})");
}
