//! Each fused kernel against its reference form, forward and gradient, on random inputs
//! with padded positions, on plain `flex` and under autodiff.

use burn::module::Param;
use burn::nn::LayerNormConfig;
use burn::tensor::{Device, Distribution, Tensor, TensorData};

use super::*;
use crate::model::bert::MASK_BIAS;

const TOLERANCE: f32 = 1e-5;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn assert_close<const D: usize>(what: &str, fused: Tensor<D>, reference: Tensor<D>) {
    assert_eq!(fused.dims(), reference.dims(), "{what}: shapes");
    let (a, b) = (values(fused), values(reference));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0f32, f32::max);
    assert!(worst <= TOLERANCE, "{what}: max difference {worst}");
}

fn random<const D: usize>(shape: [usize; D], std: f64, device: &Device) -> Tensor<D> {
    crate::train::rng::unseeded_draw(|| {
        Tensor::random(shape, Distribution::Normal(0.0, std), device)
    })
}

/// The additive padding mask `[B, 1, 1, T]` for sequences of `lengths` padded to `t`.
fn padding_mask(lengths: &[usize], t: usize, device: &Device) -> Tensor<4> {
    let bias: Vec<f32> = lengths
        .iter()
        .flat_map(|&len| (0..t).map(move |i| if i < len { 0.0 } else { MASK_BIAS }))
        .collect();
    Tensor::from_data(TensorData::new(bias, [lengths.len(), 1, 1, t]), device)
}

/// A tracked copy of `x` and the gradient of Σ f(x) ⊙ w with respect to it.
fn gradient<const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<D>,
    f: impl Fn(Tensor<D>) -> Tensor<D>,
) -> (Tensor<D>, Tensor<D>) {
    let device = Device::flex().autodiff();
    let x = Tensor::<D>::from_data(x.to_data(), &device).require_grad();
    let w = Tensor::<D>::from_data(w.to_data(), &device);
    let y = f(x.clone());
    let grads = (y.clone() * w).sum().backward();
    (y.inner(), x.grad(&grads).expect("a gradient reaches x"))
}

#[test]
fn gelu_matches_reference_forward_and_backward() {
    let device = Device::flex();
    let x = random([4, 9, 37], 3.0, &device);
    assert_close("gelu", gelu(x.clone()), reference::gelu(x.clone()));
    let w = random([4, 9, 37], 1.0, &device);
    let (y, dx) = gradient(&x, &w, gelu);
    let (y_ref, dx_ref) = gradient(&x, &w, reference::gelu);
    assert_close("gelu (autodiff)", y, y_ref);
    assert_close("gelu backward", dx, dx_ref);
}

/// The erf-composed GELU other backends run gives the exact gradient, as the fused kernel
/// does (burn's default `gelu_backward` is the tanh approximation's derivative).
#[test]
fn erf_gelu_matches_the_fused_kernel_forward_and_backward() {
    let device = Device::flex();
    let x = random([4, 9, 37], 3.0, &device);
    let w = random([4, 9, 37], 1.0, &device);
    let (y, dx) = gradient(&x, &w, gelu);
    let (y_erf, dx_erf) = gradient(&x, &w, super::erf_gelu);
    assert_close("erf gelu", y, y_erf);
    assert_close("erf gelu backward", dx, dx_erf);
}

#[test]
fn masked_softmax_matches_reference_with_padding() {
    let device = Device::flex();
    let (b, h, t) = (3, 4, 11);
    let lengths = [11, 6, 1];
    let scores = random([b, h, t, t], 4.0, &device);
    let row_mask = padding_mask(&lengths, t, &device);
    let full_mask = row_mask.clone().repeat_dim(2, t);
    for (name, mask) in [("[B,1,1,T] mask", row_mask), ("[B,1,T,T] mask", full_mask)] {
        let fused = masked_softmax(scores.clone(), mask.clone());
        let p = values(fused.clone());
        // padded keys get exactly zero
        for (row, chunk) in p.chunks(t).enumerate() {
            let len = lengths[row / (h * t)];
            assert!(chunk[len..].iter().all(|&v| v == 0.0), "{name}: {chunk:?}");
        }
        assert_close(
            name,
            fused,
            reference::masked_softmax(scores.clone(), mask.clone()),
        );
        let w = random([b, h, t, t], 1.0, &device);
        let ad_mask = Tensor::<4>::from_data(mask.to_data(), &Device::flex().autodiff());
        let (y, ds) = gradient(&scores, &w, |s| masked_softmax(s, ad_mask.clone()));
        let (y_ref, ds_ref) = gradient(&scores, &w, |s| {
            reference::masked_softmax(s, ad_mask.clone())
        });
        assert_close(name, y, y_ref);
        assert_close(name, ds, ds_ref);
    }
}

#[test]
fn attention_matches_reference_with_padding() {
    let device = Device::flex();
    let (b, t, heads, d_head) = (3, 13, 4, 8);
    let lengths = [13, 7, 1];
    let [q, k, v] = [0, 1, 2].map(|_| random([b, t, heads * d_head], 2.0, &device));
    let row_mask = padding_mask(&lengths, t, &device);
    let full_mask = row_mask.clone().repeat_dim(2, t);
    for (name, mask) in [("[B,1,1,T] mask", row_mask), ("[B,1,T,T] mask", full_mask)] {
        let fused = attention(q.clone(), k.clone(), v.clone(), mask.clone(), heads);
        let reference = reference::attention(q.clone(), k.clone(), v.clone(), mask, heads);
        assert_close(name, fused, reference);
    }
    // a padded key changes nothing: the one-token sequence attends to its token only, so
    // each head's output is that token's value
    let mask = padding_mask(&lengths, t, &device);
    let out = values(attention(q.clone(), k.clone(), v.clone(), mask, heads));
    let d = heads * d_head;
    let (v, at) = (values(v), 2 * t * d);
    for i in 0..t {
        let row = &out[at + i * d..at + (i + 1) * d];
        assert!(row
            .iter()
            .zip(&v[at..at + d])
            .all(|(o, v)| (o - v).abs() < 1e-6));
    }
}

#[test]
fn training_attention_matches_reference_forward_and_backward() {
    use crate::train::rng::with_backend_seed;
    use burn::nn::DropoutConfig;
    let plain = Device::flex();
    let ad = plain.clone().autodiff();
    let (b, t, heads, d_head) = (3, 13, 4, 8);
    let lengths = [13, 7, 1];
    let [q, k, v] = [0, 1, 2].map(|_| random([b, t, heads * d_head], 2.0, &plain));
    let w = random([b, t, heads * d_head], 1.0, &plain);
    let row_mask = padding_mask(&lengths, t, &ad);
    let full_mask = row_mask.clone().repeat_dim(2, t);
    for (name, mask) in [("[B,1,1,T] mask", row_mask), ("[B,1,T,T] mask", full_mask)] {
        for p_drop in [0.1, 0.5] {
            let dropout = DropoutConfig::new(p_drop).init();
            // the output and the gradients of Σ O ⊙ w with respect to q, k and v, with the
            // dropout mask drawn from seed 7 (the same draws for both forms)
            let run = || {
                let [qt, kt, vt] =
                    [&q, &k, &v].map(|x| Tensor::<3>::from_data(x.to_data(), &ad).require_grad());
                let o = with_backend_seed(&ad, 7, || {
                    training_attention(
                        qt.clone(),
                        kt.clone(),
                        vt.clone(),
                        mask.clone(),
                        heads,
                        &dropout,
                    )
                });
                let grads = (o.clone() * Tensor::<3>::from_data(w.to_data(), &ad))
                    .sum()
                    .backward();
                let g = |x: &Tensor<3>| x.grad(&grads).expect("a gradient reaches it");
                (o.inner(), g(&qt), g(&kt), g(&vt))
            };
            let what = format!("{name}, p = {p_drop}");
            // the fused kernel, not the fallback, is what gets compared
            let tracked = |x: &Tensor<3>| Tensor::<3>::from_data(x.to_data(), &ad).require_grad();
            let applied = with_backend_seed(&ad, 7, || {
                flex::training_attention(
                    tracked(&q),
                    tracked(&k),
                    tracked(&v),
                    mask.clone(),
                    heads,
                    p_drop,
                )
                .is_ok()
            });
            assert!(applied, "{what}: the fused kernel did not apply");
            let (o, dq, dk, dv) = run();
            let (o_ref, dq_ref, dk_ref, dv_ref) = with_reference_kernels(run);
            assert_close(&what, o, o_ref);
            assert_close(&format!("{what}: dq"), dq, dq_ref);
            assert_close(&format!("{what}: dk"), dk, dk_ref);
            assert_close(&format!("{what}: dv"), dv, dv_ref);
        }
    }
}

#[test]
fn layer_norm_matches_reference_forward_and_backward() {
    let (rows, d) = ([3, 7], 48);
    let plain = Device::flex();
    let x = random([rows[0], rows[1], d], 2.0, &plain).add_scalar(0.5);
    let w = random([rows[0], rows[1], d], 1.0, &plain);
    let gamma = random([d], 1.0, &plain).add_scalar(1.0);
    let beta = random([d], 1.0, &plain);
    let epsilon = 1e-12;
    let module = |device: &Device| {
        let mut ln = LayerNormConfig::new(d).with_epsilon(epsilon).init(device);
        ln.gamma = Param::from_tensor(Tensor::from_data(gamma.to_data(), device));
        ln.beta = Some(Param::from_tensor(Tensor::from_data(
            beta.to_data(),
            device,
        )));
        ln
    };
    let ln = module(&plain);
    assert_close(
        "layer norm",
        layer_norm(&ln, epsilon, x.clone()),
        reference::layer_norm(&ln, x.clone()),
    );

    let device = plain.autodiff();
    let run = |fused: bool| {
        let ln = module(&device);
        let x = Tensor::<3>::from_data(x.to_data(), &device).require_grad();
        let w = Tensor::<3>::from_data(w.to_data(), &device);
        let y = if fused {
            layer_norm(&ln, epsilon, x.clone())
        } else {
            reference::layer_norm(&ln, x.clone())
        };
        let grads = (y.clone() * w).sum().backward();
        let beta = ln.beta.as_ref().expect("beta");
        (
            y.inner(),
            x.grad(&grads).expect("dx"),
            ln.gamma.grad(&grads).expect("dgamma"),
            beta.grad(&grads).expect("dbeta"),
        )
    };
    let (y, dx, dg, db) = run(true);
    let (y_ref, dx_ref, dg_ref, db_ref) = run(false);
    assert_close("layer norm (autodiff)", y, y_ref);
    assert_close("layer norm dx", dx, dx_ref);
    assert_close("layer norm dgamma", dg, dg_ref);
    assert_close("layer norm dbeta", db, db_ref);
}

#[test]
fn lstm_matches_reference_forward_and_backward_through_time() {
    let device = Device::flex();
    let ad = Device::flex().autodiff();
    // (B, T, d): a single step, a short odd shape, and one whose step products are large
    // enough for gemm to split them over threads
    for (b, t, d) in [(2, 1, 3), (3, 11, 5), (32, 4, 64)] {
        let x_proj = random([b, t, 4 * d], 1.5, &device);
        let w_hh = random([d, 4 * d], 0.5, &device);
        let what = format!("lstm B={b} T={t} d={d}");
        // the fused kernel, not the fallback, is what gets compared (plain and tracked)
        assert!(flex::lstm(x_proj.clone(), w_hh.clone()).is_ok(), "{what}");
        let tracked = |x: &Tensor<3>, u: &Tensor<2>| {
            (
                Tensor::<3>::from_data(x.to_data(), &ad).require_grad(),
                Tensor::<2>::from_data(u.to_data(), &ad).require_grad(),
            )
        };
        let (x_ad, w_ad) = tracked(&x_proj, &w_hh);
        assert!(flex::lstm(x_ad, w_ad).is_ok(), "{what} (autodiff)");
        assert_close(
            &what,
            lstm(x_proj.clone(), w_hh.clone()),
            reference::lstm(x_proj.clone(), w_hh.clone()),
        );
        // the gradient of Σ h ⊙ w with respect to both inputs, through every step
        let w = Tensor::<3>::from_data(random([b, t, d], 1.0, &device).to_data(), &ad);
        let grads_of = |f: &dyn Fn(Tensor<3>, Tensor<2>) -> Tensor<3>| {
            let (x, u) = tracked(&x_proj, &w_hh);
            let y = f(x.clone(), u.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            (
                y.inner(),
                x.grad(&grads).expect("a gradient reaches x_proj"),
                u.grad(&grads).expect("a gradient reaches W_hh"),
            )
        };
        let (y, dx, dw) = grads_of(&lstm);
        let (y_ref, dx_ref, dw_ref) = grads_of(&reference::lstm);
        assert_close(&format!("{what} (autodiff)"), y, y_ref);
        assert_close(&format!("{what}: dL/dx_proj"), dx, dx_ref);
        assert_close(&format!("{what}: dL/dW_hh"), dw, dw_ref);
    }
}

#[test]
fn reference_switch_is_per_thread_and_restored() {
    let device = Device::flex();
    let x = random([2, 3], 1.0, &device);
    let inside = with_reference_kernels(|| !fused_enabled());
    assert!(inside);
    assert!(fused_enabled());
    assert_close("gelu", gelu(x.clone()), reference::gelu(x));
}

/// The one-node forms the GPU backends run ([`composed`]), here on `flex` under autodiff,
/// against the reference forms: forward and every gradient.
mod composed_forms {
    use super::*;
    use crate::train::rng::with_backend_seed;
    use burn::backend::Flex;
    use burn::nn::DropoutConfig;

    #[test]
    fn gelu_matches_the_erf_form_forward_and_backward() {
        let device = Device::flex();
        let x = random([4, 9, 37], 3.0, &device);
        let w = random([4, 9, 37], 1.0, &device);
        let (y, dx) = gradient(&x, &w, |x| {
            composed::gelu::<Flex, 3>(x)
                .unwrap_or_else(|_| panic!("the one-node form did not apply"))
        });
        let (y_erf, dx_erf) = gradient(&x, &w, super::super::erf_gelu);
        assert_close("gelu", y, y_erf);
        assert_close("gelu backward", dx, dx_erf);
    }

    #[test]
    fn layer_norm_matches_reference_forward_and_backward() {
        let (rows, d) = ([3, 7], 48);
        let plain = Device::flex();
        let device = plain.clone().autodiff();
        let x = random([rows[0], rows[1], d], 2.0, &plain).add_scalar(0.5);
        let w = random([rows[0], rows[1], d], 1.0, &plain);
        let gamma = random([d], 1.0, &plain).add_scalar(1.0);
        let beta = random([d], 1.0, &plain);
        let epsilon = 1e-5;
        let run = |one_node: bool| {
            let [g, b] = [&gamma, &beta]
                .map(|p| Tensor::<1>::from_data(p.to_data(), &device).require_grad());
            let x = Tensor::<3>::from_data(x.to_data(), &device).require_grad();
            let y = if one_node {
                composed::layer_norm::<Flex, 3>(x.clone(), g.clone(), Some(b.clone()), epsilon)
                    .unwrap_or_else(|_| panic!("the one-node form did not apply"))
            } else {
                burn::tensor::module::layer_norm(x.clone(), g.clone(), Some(b.clone()), epsilon)
            };
            let grads = (y.clone() * Tensor::<3>::from_data(w.to_data(), &device))
                .sum()
                .backward();
            (
                y.inner(),
                x.grad(&grads).expect("dx"),
                g.grad(&grads).expect("dgamma"),
                b.grad(&grads).expect("dbeta"),
            )
        };
        let (y, dx, dg, db) = run(true);
        let (y_ref, dx_ref, dg_ref, db_ref) = run(false);
        assert_close("layer norm", y, y_ref);
        assert_close("layer norm dx", dx, dx_ref);
        assert_close("layer norm dgamma", dg, dg_ref);
        assert_close("layer norm dbeta", db, db_ref);
    }

    #[test]
    fn masked_softmax_matches_reference_forward_and_backward() {
        let plain = Device::flex();
        let ad = plain.clone().autodiff();
        let (b, h, t) = (3, 4, 11);
        let scores = random([b, h, t, t], 4.0, &plain);
        let w = random([b, h, t, t], 1.0, &plain);
        let row_mask = padding_mask(&[11, 6, 1], t, &ad);
        let full_mask = row_mask.clone().repeat_dim(2, t);
        for (name, mask) in [("[B,1,1,T] mask", row_mask), ("[B,1,T,T] mask", full_mask)] {
            let (y, ds) = gradient(&scores, &w, |s| {
                composed::masked_softmax::<Flex>(s, mask.clone())
                    .unwrap_or_else(|_| panic!("the one-node form did not apply"))
            });
            let (y_ref, ds_ref) =
                gradient(&scores, &w, |s| reference::masked_softmax(s, mask.clone()));
            assert_close(name, y, y_ref);
            assert_close(name, ds, ds_ref);
        }
    }

    #[test]
    fn training_attention_matches_reference_with_the_same_dropout_draws() {
        let plain = Device::flex();
        let ad = plain.clone().autodiff();
        let (b, t, heads, d_head) = (3, 13, 4, 8);
        let [q, k, v] = [0, 1, 2].map(|_| random([b, t, heads * d_head], 2.0, &plain));
        let w = random([b, t, heads * d_head], 1.0, &plain);
        let row_mask = padding_mask(&[13, 7, 1], t, &ad);
        let full_mask = row_mask.clone().repeat_dim(2, t);
        for (name, mask) in [("[B,1,1,T] mask", row_mask), ("[B,1,T,T] mask", full_mask)] {
            for p_drop in [0.0, 0.1, 0.5] {
                let dropout = DropoutConfig::new(p_drop).init();
                // the output and the gradients of Σ O ⊙ w with respect to q, k and v, the
                // dropout mask drawn from the backend's generator at seed 7 in both forms
                let run = |one_node: bool| {
                    let [qt, kt, vt] = [&q, &k, &v]
                        .map(|x| Tensor::<3>::from_data(x.to_data(), &ad).require_grad());
                    let (q, k, v) = (qt.clone(), kt.clone(), vt.clone());
                    let o = with_backend_seed(&ad, 7, || {
                        if one_node {
                            composed::training_attention::<Flex>(
                                q,
                                k,
                                v,
                                mask.clone(),
                                heads,
                                p_drop,
                            )
                            .unwrap_or_else(|_| panic!("the one-node form did not apply"))
                        } else {
                            with_reference_kernels(|| {
                                reference::training_attention(
                                    q,
                                    k,
                                    v,
                                    mask.clone(),
                                    heads,
                                    &dropout,
                                )
                            })
                        }
                    });
                    let grads = (o.clone() * Tensor::<3>::from_data(w.to_data(), &ad))
                        .sum()
                        .backward();
                    let g = |x: &Tensor<3>| x.grad(&grads).expect("a gradient reaches it");
                    (o.inner(), g(&qt), g(&kt), g(&vt))
                };
                let what = format!("{name}, p = {p_drop}");
                let (o, dq, dk, dv) = run(true);
                let (o_ref, dq_ref, dk_ref, dv_ref) = run(false);
                assert_close(&what, o, o_ref);
                assert_close(&format!("{what}: dq"), dq, dq_ref);
                assert_close(&format!("{what}: dk"), dk, dk_ref);
                assert_close(&format!("{what}: dv"), dv, dv_ref);
            }
        }
    }

    #[test]
    fn bias_add_matches_the_broadcast_add_forward_and_backward() {
        let plain = Device::flex();
        let ad = plain.clone().autodiff();
        let (n, d) = (37, 24);
        let [y, w] = [0, 1].map(|_| random([n, d], 2.0, &plain));
        let b = random([d], 1.0, &plain);
        let run = |one_node: bool| {
            let yt = Tensor::<2>::from_data(y.to_data(), &ad).require_grad();
            let bt = Tensor::<1>::from_data(b.to_data(), &ad).require_grad();
            let out = match one_node {
                true => composed::add_bias::<Flex>(yt.clone(), bt.clone())
                    .unwrap_or_else(|_| panic!("the one-node form did not apply")),
                false => yt.clone() + bt.clone().unsqueeze::<2>(),
            };
            let grads = (out.clone() * Tensor::<2>::from_data(w.to_data(), &ad))
                .sum()
                .backward();
            (
                out.inner(),
                yt.grad(&grads).expect("dy"),
                bt.grad(&grads).expect("db"),
            )
        };
        let (out, dy, db) = run(true);
        let (out_ref, dy_ref, db_ref) = run(false);
        assert_close("bias add", out, out_ref);
        assert_close("bias add dy", dy, dy_ref);
        assert_close("bias add db", db, db_ref);
    }

    #[test]
    fn inference_attention_matches_reference() {
        let device = Device::flex();
        let (b, t, heads, d_head) = (3, 13, 4, 8);
        let [q, k, v] = [0, 1, 2].map(|_| random([b, t, heads * d_head], 2.0, &device));
        let row_mask = padding_mask(&[13, 7, 1], t, &device);
        let full_mask = row_mask.clone().repeat_dim(2, t);
        for (name, mask) in [("[B,1,1,T] mask", row_mask), ("[B,1,T,T] mask", full_mask)] {
            let one_node =
                composed::attention::<Flex>(q.clone(), k.clone(), v.clone(), mask.clone(), heads)
                    .unwrap_or_else(|_| panic!("the composed form did not apply"));
            let reference = reference::attention(q.clone(), k.clone(), v.clone(), mask, heads);
            assert_close(name, one_node, reference);
        }
    }

    /// Untracked or non-f32 inputs are handed back unchanged, for the reference form.
    #[test]
    fn inputs_it_cannot_take_come_back() {
        let plain = Device::flex();
        let x = random([2, 3, 8], 1.0, &plain);
        let gamma = random([8], 1.0, &plain);
        assert!(!composed::takes::<Flex, 3>(&x));
        let tracked = Tensor::<3>::from_data(x.to_data(), &plain.clone().autodiff());
        assert!(composed::takes::<Flex, 3>(&tracked));
        let back = composed::layer_norm::<Flex, 3>(x.clone(), gamma, None, 1e-5);
        let Err((x_back, _, None)) = back else {
            panic!("an untracked LayerNorm without β was taken")
        };
        assert_eq!(values(x_back), values(x));
    }
}
