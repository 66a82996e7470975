//! The encoder's steps on a GPU (burn's cubecl kernels; fused ones with `--features
//! gpu-fusion`) held to the CPU's fused kernels: GELU, the masked softmax and LayerNorm
//! within 1e-5 (f32) forward and backward; attention, whose products run as TF32 on tensor
//! cores, within 3e-3 (measured 1.9e-3 with `gpu-fusion`, 2.1e-3 without: TF32 rounds the
//! operands to a 10-bit mantissa, and the two builds sum in other orders); the bf16 products
//! of mixed precision within one bf16 rounding of the output (both devices round the
//! operands and the product to bf16, their accumulation orders differ); a linear layer's
//! output and gradients (its bias gradient a product on a GPU) and attention for inference
//! within TF32 rounding; and the flat AdamW of `fit` off the CPU against burn's
//! per-parameter AdamW. On a GPU the encoder's steps run as pipe's one-node forms
//! (`src/model/fused/composed.rs`).
//!
//! These run in a `--features cuda` build on a machine with a GPU (`PIPE_TEST_GPU`, default
//! `cuda:0`); elsewhere each test says SKIPPED and passes. On an H200 (session 25, fusion
//! and autotune on): GELU 4.8e-7 / 7.2e-7, LayerNorm 7.2e-7 / 7.2e-7, masked softmax
//! 1.2e-7 / 8.9e-8 (forward / backward), attention 1.0e-3 / 1.9e-3, bf16 product 0.25 at an
//! entry of 91.5 (half a bf16 step). Session 27 (plain `cuda` build): attention 1.0e-3 /
//! 2.1e-3; flat AdamW within 8.6e-7 of the per-parameter update after four updates.

use burn::nn::{DropoutConfig, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

use pipe::model::fused;
use pipe::model::precision::{self, Precision};

/// `PIPE_TEST_GPU`: the device to test (`cuda:0` unless set; `wgpu` runs these on any
/// Vulkan device, lavapipe's CPU one included).
fn gpu_spec() -> String {
    std::env::var("PIPE_TEST_GPU").unwrap_or_else(|_| "cuda:0".into())
}

/// The GPU under test, or `None` (with the reason printed) where there is none.
fn gpu() -> Option<Device> {
    let spec = gpu_spec();
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
        3e-3,
        &gpu,
    );
}

#[test]
fn bf16_products_match_the_cpu_within_one_rounding() {
    let Some(gpu) = gpu() else { return };
    if gpu_spec().starts_with("wgpu") {
        eprintln!("SKIPPED: wgpu's shaders (WGSL) have no bf16");
        return;
    }
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

/// max |a − b| over max(1, max |b|): products run as TF32 on tensor cores, so their errors
/// grow with the values.
fn relative_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
    max_abs_diff(a, b) / scale
}

/// A linear layer while training (on a GPU the product through burn, the bias as pipe's
/// one-node `add_bias`, whose gradient is the column sums as a product with a row of
/// ones): the output and the gradients of x, W and b against the CPU, within TF32 rounding.
#[test]
fn linear_and_its_bias_gradient_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let (n, d_in, d_out) = (1000, 64, 96);
    let x: Tensor<2> = random([n, d_in], 20);
    let w: Tensor<2> = random([d_in, d_out], 21);
    let b: Tensor<1> = random([d_out], 22);
    let g: Tensor<2> = random([n, d_out], 23);
    let run = |device: &Device, on_gpu: bool| {
        let device = device.clone().autodiff();
        let mut layer = burn::nn::LinearConfig::new(d_in, d_out).init(&device);
        layer.weight = burn::module::Param::from_tensor(on(&w, &device));
        layer.bias = Some(burn::module::Param::from_tensor(on(&b, &device)));
        let x = on(&x, &device).require_grad();
        // on the GPU the one-node forms, not a fallback, are what is compared
        assert_eq!(fused::gpu_forms_apply(&x), on_gpu);
        let y = fused::linear(&layer, x.clone());
        let grads = (y.clone() * on(&g, &device)).sum().backward();
        let bias = layer.bias.as_ref().expect("a bias");
        [
            y.inner().flatten::<1>(0, 1),
            x.grad(&grads).expect("dx").flatten::<1>(0, 1),
            layer.weight.grad(&grads).expect("dW").flatten::<1>(0, 1),
            bias.grad(&grads).expect("db"),
        ]
        .map(|t| Tensor::<1>::from_data(t.to_data(), &Device::flex()))
    };
    let (cpu, on_gpu) = (run(&Device::flex(), false), run(&gpu, true));
    for ((name, c), g) in ["y", "dx", "dW", "db"].iter().zip(cpu).zip(on_gpu) {
        let diff = relative_diff(g, c);
        eprintln!("linear {name}: max |GPU − CPU| / max(1, |CPU|) {diff:.2e}");
        assert!(diff <= 3e-3, "linear {name}: {diff}");
    }
}

/// Attention for inference (no autodiff): on a GPU pipe's composed form, on the CPU the
/// fused kernel; within TF32 rounding.
#[test]
fn inference_attention_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let (b, t, d, heads) = (2, 48, 64, 4);
    let [q, k, v]: [Tensor<3>; 3] = [30, 31, 32].map(|seed| random([b, t, d], seed));
    let mut bias = vec![0.0f32; b * t];
    bias[t + 30..].iter_mut().for_each(|x| *x = -1.0e4);
    let mask = burn::tensor::TensorData::new(bias, [b, 1, 1, t]);
    let run = |device: &Device| {
        let context = fused::attention(
            on(&q, device),
            on(&k, device),
            on(&v, device),
            Tensor::<4>::from_data(mask.clone(), device),
            heads,
        );
        Tensor::<3>::from_data(context.to_data(), &Device::flex())
    };
    let diff = relative_diff(run(&gpu), run(&Device::flex()));
    eprintln!("inference attention: max |GPU − CPU| / max(1, |CPU|) {diff:.2e}");
    assert!(diff <= 3e-3, "{diff}");
}

/// Two linear layers: the weights decay, the biases do not.
#[derive(burn::module::Module, Debug)]
struct TwoLayers {
    a: burn::nn::Linear,
    b: burn::nn::Linear,
}

fn layer_values(model: &TwoLayers) -> Tensor<1> {
    let mut parts = Vec::new();
    for layer in [&model.a, &model.b] {
        parts.push(layer.weight.val().inner().flatten::<1>(0, 1));
        if let Some(bias) = &layer.bias {
            parts.push(bias.val().inner());
        }
    }
    Tensor::cat(parts, 0)
}

/// The flat AdamW `fit` uses off the CPU against burn's per-parameter AdamW, both on the
/// GPU from the same weights and inputs (so the same gradients): four updates with clipping
/// and weight decay, the weights within 1e-6 + 1e-5·|w| after each.
#[test]
fn flat_adamw_follows_the_per_parameter_update_on_the_gpu() {
    use burn::optim::GradientsParams;
    use pipe::train::clipping::clip_global_norm;
    use pipe::train::flat_adamw::FlatAdamW;
    use pipe::train::layer_decay::ParamRates;
    use pipe::train::LossScale;

    let Some(gpu) = gpu() else { return };
    let device = gpu.autodiff();
    let init = TwoLayers {
        a: burn::nn::LinearConfig::new(96, 64).init(&device),
        b: burn::nn::LinearConfig::new(64, 8).init(&device),
    };
    let (mut flat_model, mut per_model) = (init.clone(), init);
    let mut flat = FlatAdamW::new(&flat_model, 0.01, 1e-6);
    let mut per = pipe::train::fit::adamw(&per_model, 0.01);
    let mut scale = LossScale::for_precision(Precision::F32);
    let loss = |m: &TwoLayers, x: &Tensor<2>| {
        m.b.forward(m.a.forward(x.clone()).tanh())
            .powf_scalar(2.0)
            .mean()
    };
    for step in 0..4 {
        let x = on(&random([16, 96], 10 + step), &device);
        let lr = 1e-3;
        let g_flat = GradientsParams::from_grads(loss(&flat_model, &x).backward(), &flat_model);
        (flat_model, _) = flat
            .step(
                lr,
                &ParamRates::default(),
                flat_model,
                g_flat,
                0.05,
                &mut scale,
            )
            .expect("a flat update");
        let g_per = GradientsParams::from_grads(loss(&per_model, &x).backward(), &per_model);
        let (g_per, _) = clip_global_norm(&per_model, g_per, 0.05);
        per_model = per.step(lr, per_model, g_per);
        let (a, b) = (layer_values(&flat_model), layer_values(&per_model));
        let largest = b.clone().abs().max().into_scalar::<f32>();
        let diff = max_abs_diff(a, b);
        eprintln!("flat AdamW update {step}: max |flat − per-parameter| {diff:.2e}");
        assert!(diff <= 1e-6 + 1e-5 * largest, "update {step}: {diff}");
    }
}
