//! The fused encoder kernels leave training where it was: with fixed padding (no length
//! bucketing), the first 20 losses of a smoke fine-tuning run equal those of the reference
//! (unfused) forms at the same seed. A test binary of its own: the backend's generator is
//! process-wide, and a library test drawing from it unseeded in parallel would change the
//! dropout masks of one run and not the other.

mod common;

use burn::prelude::*;

use common::training_run::first_losses;
use pipe::model::device::train_device;
use pipe::model::fused::with_reference_kernels;
use pipe::train::rng::with_backend_seed;

#[test]
fn first_twenty_losses_equal_the_reference_forms() {
    let fused = first_losses();
    let reference = with_reference_kernels(first_losses);
    for (step, (f, r)) in fused.iter().zip(&reference).enumerate() {
        assert!(
            (f - r).abs() <= 1e-4,
            "step {step}: fused loss {f}, reference {r}\nfused {fused:?}\nreference {reference:?}"
        );
    }
    // the run learns, so the comparison is over changing weights
    assert!(
        fused.iter().any(|&l| (l - fused[0]).abs() > 1e-3),
        "{fused:?}"
    );
}

#[test]
fn dropout_masks_are_the_ones_burns_dropout_draws() {
    use burn::nn::DropoutConfig;
    let device = train_device(&Device::flex());
    let dropout = DropoutConfig::new(0.1).init();
    // more elements than one parallel chunk, and two calls in one scope
    let x: Tensor<3> = with_backend_seed(&device, 4, || {
        Tensor::random(
            [3, 50, 400],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        )
    });
    let twice = |x: &Tensor<3>| {
        let a = pipe::model::fused::dropout(&dropout, x.clone());
        let b = pipe::model::fused::dropout(&dropout, x.clone());
        (a.into_data(), b.into_data())
    };
    let ours = with_backend_seed(&device, 9, || twice(&x));
    let burns = with_backend_seed(&device, 9, || with_reference_kernels(|| twice(&x)));
    assert_eq!(ours.0, burns.0, "first call");
    assert_eq!(ours.1, burns.1, "second call");
    assert_ne!(ours.0, ours.1, "the stream moves on between calls");
}
