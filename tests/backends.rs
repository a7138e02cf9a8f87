//! The invariants every engine must keep, each written once and run on the CPU and on the
//! GPU (Mesa's lavapipe in CI) by `test_device!`, after candle's pattern: finite
//! differences, the bound and its tight form, the prefix property, depth 10,000, cross-
//! entropy, user weights, extreme input scales and bad input.
//!
//! Each engine is held to its own tolerance: the CPU computes in f64, so it meets the plain
//! f64 references to 1e-9 decades; the GPU computes in f32, held to `--check`'s
//! [`Tolerance::f32_vs_f64`] (see its documentation for why those numbers).

mod common;

use gradscope::backend::cpu::{backprop_plain, cost_plain, norm2, CpuBackend};
use gradscope::backend::Backend;
use gradscope::check::{compare, Tolerance};
use gradscope::model::{Activation, Cost, Problem, TargetSpec};
use gradscope::stats::{LayerStatus, Report};
use gradscope::Error;

use common::*;

/// One engine under test and the tolerance its arithmetic earns.
struct Dev {
    backend: Box<dyn Backend>,
    /// Against an f64 reference computed another way (plain backprop, finite differences).
    tol: Tolerance,
}

impl Dev {
    fn probe(&self, p: &Problem, what: &str) -> Report {
        self.backend.probe(p).unwrap_or_else(|e| panic!("{what} on {}: {e}", self.backend.name()))
    }

    /// |a − b| within the tolerance of `field` at layer l of an L-layer network.
    fn close(&self, a: f64, b: f64, field: &str, l: usize, big_l: usize, what: &str) {
        assert_log_close(a, b, self.tol.allowed(field, l, big_l), &format!("{what} on {}: {field} layer {l}", self.backend.name()));
    }
}

fn cpu_dev() -> Dev {
    Dev { backend: Box::new(CpuBackend::default()), tol: Tolerance { base: 1e-9, per_layer: 1e-12 } }
}

#[cfg(feature = "gpu")]
fn gpu_dev(test: &str) -> Option<Dev> {
    gpu(test).map(|g| Dev { backend: Box::new(g), tol: Tolerance::f32_vs_f64() })
}

/// `test_device!(check, check_cpu, check_gpu)` defines the tests `check_cpu` and
/// `check_gpu`, each running `fn check(&Dev)` on its engine (the GPU one skips loudly
/// without an adapter, or fails under GRADSCOPE_REQUIRE_GPU=1).
macro_rules! test_device {
    ($check:ident, $cpu:ident, $gpu:ident) => {
        #[test]
        fn $cpu() {
            $check(&cpu_dev());
        }

        #[cfg(feature = "gpu")]
        #[test]
        fn $gpu() {
            if let Some(d) = gpu_dev(stringify!($gpu)) {
                $check(&d);
            }
        }
    };
}

/// log10 of a Frobenius or Euclidean norm.
fn log10_norm<'a>(v: impl IntoIterator<Item = &'a f64>) -> f64 {
    0.5 * v.into_iter().map(|x| x * x).sum::<f64>().log10()
}

/// Central differences of C against the engine's ‖∂C/∂b^l‖ and ‖∂C/∂W^l‖_F, every layer,
/// a bounded σ with quadratic cost and sigmoid with cross-entropy. With h = 1e-5 the
/// difference quotient is good to ~1e-9 relative (truncation O(h²), rounding O(ε/h)), far
/// inside either engine's tolerance; a wrong sign, index or factor is off by O(1).
fn grad_norms_match_finite_differences(dev: &Dev) {
    for (i, (act, cost)) in [(Activation::Tanh, Cost::Quadratic), (Activation::Sigmoid, Cost::CrossEntropy), (Activation::Gelu, Cost::Quadratic)].into_iter().enumerate() {
        let targets = if cost == Cost::CrossEntropy { TargetSpec::Uniform } else { TargetSpec::Gaussian };
        let p = problem(&[5, 7, 4, 6], act, cost, gaussian(1.7, 0.3), 3, 100 + i as u64, targets);
        let r = dev.probe(&p, "finite differences");
        let (w0, b0) = stored(&p);
        let h = 1e-5;
        let c = |w: Vec<ndarray::Array2<f64>>, b: Vec<ndarray::Array1<f64>>| cost_plain(&with_params(&p, w, b));
        for l in 0..w0.len() {
            let mut fd_w = Vec::new();
            for idx in ndarray::indices(w0[l].dim()) {
                let (mut wp, mut wm) = (w0.clone(), w0.clone());
                wp[l][idx] += h;
                wm[l][idx] -= h;
                fd_w.push((c(wp, b0.clone()) - c(wm, b0.clone())) / (2.0 * h));
            }
            let mut fd_b = Vec::new();
            for j in 0..b0[l].len() {
                let (mut bp, mut bm) = (b0.clone(), b0.clone());
                bp[l][j] += h;
                bm[l][j] -= h;
                fd_b.push((c(w0.clone(), bp) - c(w0.clone(), bm)) / (2.0 * h));
            }
            let st = &r.layers[l];
            let what = format!("{act}/{cost}");
            dev.close(st.log10_grad_b_mean, log10_norm(&fd_b), "log10_grad_b_mean", l + 1, 3, &what);
            dev.close(st.log10_grad_w_mean, log10_norm(&fd_w), "log10_grad_w_mean", l + 1, 3, &what);
        }
    }
}
test_device!(grad_norms_match_finite_differences, grad_norms_match_finite_differences_cpu, grad_norms_match_finite_differences_gpu);

/// docs/MATH.md: grad_b_mean ≤ grad_b_rms ≤ max_x ‖δ_x‖ ≤ bound_tight ≤ bound, at every
/// layer, for bounded, homogeneous and self-normalising σ in both phases and under
/// cross-entropy. The slack is the engine's tolerance (zero in exact arithmetic).
fn bound_and_tight_bound_hold(dev: &Dev) {
    let cases = [
        (Activation::Tanh, Cost::Quadratic, 0.8),
        (Activation::Tanh, Cost::Quadratic, 3.0),
        (Activation::Relu, Cost::Quadratic, 2.0),
        (Activation::Selu, Cost::Quadratic, 1.0),
        (Activation::Sigmoid, Cost::CrossEntropy, 4.0),
    ];
    for (i, (act, cost, sw2)) in cases.into_iter().enumerate() {
        let targets = if cost == Cost::CrossEntropy { TargetSpec::Uniform } else { TargetSpec::Gaussian };
        let p = problem(&[7; 13], act, cost, gaussian(sw2, 0.05), 5, 40 + i as u64, targets);
        let r = dev.probe(&p, "bounds");
        let big_l = r.layers.len();
        for st in &r.layers {
            let slack = dev.tol.allowed("log10_bound", st.layer, big_l);
            let what = format!("{act} σ_w²={sw2} layer {} on {}", st.layer, dev.backend.name());
            assert_eq!(st.status, LayerStatus::Ok, "{what}");
            assert!(st.log10_grad_b_mean <= st.log10_grad_b_rms + slack, "{what}: mean {} > rms {}", st.log10_grad_b_mean, st.log10_grad_b_rms);
            assert!(st.log10_grad_b_rms <= st.log10_bound_tight + slack, "{what}: rms {} > bound_tight {}", st.log10_grad_b_rms, st.log10_bound_tight);
            assert!(st.log10_bound_tight <= st.log10_bound + slack, "{what}: bound_tight {} > bound {}", st.log10_bound_tight, st.log10_bound);
        }
    }
}
test_device!(bound_and_tight_bound_hold, bound_and_tight_bound_hold_cpu, bound_and_tight_bound_hold_gpu);

/// The prefix property: the stacked probe's report of depth d equals a probe of the depth-d
/// network, bit for bit (the same arithmetic in the same order on either engine): tanh with
/// biases, an input width unlike the others, depths unsorted with a duplicate.
/// (Checkpointed plans: tests/reference.rs and tests/gpu_sweep.rs.)
fn prefix_property_holds(dev: &Dev) {
    let p = problem(&[vec![9], vec![12; 30]].concat(), Activation::Tanh, Cost::Quadratic, gaussian(1.5, 0.05), 4, 3, TargetSpec::Gaussian);
    let depths = [30, 1, 6, 7, 13, 29, 6];
    let multi = dev.backend.probe_depths(&p, &depths).unwrap();
    assert_eq!(multi.len(), 6, "one report per distinct depth");
    for r in &multi {
        let d = r.layers.len();
        let mut q = p.clone();
        q.net.widths.truncate(d + 1);
        let single = dev.probe(&q, "prefix");
        let c = compare(r, &single, &Tolerance { base: 0.0, per_layer: 0.0 });
        assert!(c.passed() && c.cost_abs == 0.0, "depth {d} on {}: stacked differs from its own probe: {}", dev.backend.name(), c.summary(8));
    }
}
test_device!(prefix_property_holds, prefix_property_holds_cpu, prefix_property_holds_gpu);

/// Depth 10,000: sigmoid's ‖δ¹‖ ≈ 10^-2000 and beyond is a finite log10 on every layer, not
/// 0; on the GPU it also agrees with the CPU within `--check`'s tolerance at that depth.
fn depth_ten_thousand_stays_finite(dev: &Dev) {
    let big_l = 10_000;
    let p = problem(&vec![6; big_l + 1], Activation::Sigmoid, Cost::Quadratic, gaussian(1.0, 0.0), 3, 8, TargetSpec::Gaussian);
    let r = dev.probe(&p, "depth 10,000");
    for st in &r.layers {
        assert_eq!(st.status, LayerStatus::Ok, "layer {}", st.layer);
        assert!(st.log_fields().iter().all(|(_, v)| v.is_finite()), "layer {}: {:?}", st.layer, st.log_fields());
    }
    assert!(r.layers[0].log10_grad_b_rms < -2000.0, "sigmoid vanishes: layer 1 at 10^{}", r.layers[0].log10_grad_b_rms);
    if dev.backend.name() != "cpu" {
        let c = compare(&r, &CpuBackend::default().probe(&p).unwrap(), &dev.tol);
        assert!(c.passed(), "{}", c.summary(8));
    }
}
test_device!(depth_ten_thousand_stays_finite, depth_ten_thousand_stays_finite_cpu, depth_ten_thousand_stays_finite_gpu);

/// Cross-entropy with a sigmoid output: the cost is C = (1/B) Σ_x C_x of the plain forward
/// pass and every layer's gradients are plain backprop's (δ^L = a^L − y, no σ′ at the top).
fn cross_entropy_matches_plain_backprop(dev: &Dev) {
    let p = problem(&[6, 8, 9, 5], Activation::Sigmoid, Cost::CrossEntropy, gaussian(2.0, 0.1), 4, 17, TargetSpec::Uniform);
    let r = dev.probe(&p, "cross-entropy");
    dev.close(r.log10_cost, cost_plain(&p).log10(), "log10_cost", 3, 3, "cross-entropy cost");
    for (st, g) in r.layers.iter().zip(backprop_plain(&p)) {
        dev.close(st.log10_grad_b_mean, norm2(g.grad_b.view()).log10(), "log10_grad_b_mean", st.layer, 3, "cross-entropy");
        dev.close(st.log10_grad_w_mean, log10_norm(g.grad_w.iter()), "log10_grad_w_mean", st.layer, 3, "cross-entropy");
    }
}
test_device!(cross_entropy_matches_plain_backprop, cross_entropy_matches_plain_backprop_cpu, cross_entropy_matches_plain_backprop_gpu);

/// Weights the user gives (here: a generated network, one layer tripled, biases set) are
/// used as given: the gradients are plain backprop's on them and ‖W^l‖₂ is the f64
/// spectral norm of each matrix.
fn user_weights_are_used_as_given(dev: &Dev) {
    let p = problem(&[6, 10, 10, 4], Activation::Tanh, Cost::Quadratic, gaussian(1.2, 0.0), 5, 23, TargetSpec::Gaussian);
    let (mut w, mut b) = stored(&p);
    w[1].mapv_inplace(|v| 3.0 * v);
    b[2].iter_mut().enumerate().for_each(|(i, v)| *v = 0.1 * i as f64 - 0.2);
    let q = with_params(&p, w.clone(), b);
    let r = dev.probe(&q, "user weights");
    for ((st, g), wl) in r.layers.iter().zip(backprop_plain(&q)).zip(&w) {
        dev.close(st.log10_grad_b_mean, norm2(g.grad_b.view()).log10(), "log10_grad_b_mean", st.layer, 3, "user weights");
        dev.close(st.log10_grad_w_mean, log10_norm(g.grad_w.iter()), "log10_grad_w_mean", st.layer, 3, "user weights");
        let sn = gradscope::linalg::spectral_norm(wl.view()).log10();
        assert_log_close(st.log10_weight_norm, sn, 1e-9, &format!("user weights: ‖W^{}‖₂", st.layer));
    }
}
test_device!(user_weights_are_used_as_given, user_weights_are_used_as_given_cpu, user_weights_are_used_as_given_gpu);

/// Inputs of order 1e±200 through positively homogeneous σ (relu, leaky-relu, linear) with
/// zero biases and targets: everything scales exactly, δ and ∂C/∂b by c, ∂C/∂W and C by c²,
/// the bounds by c, so each field equals the unit-scale probe's plus its multiple of
/// log10 c. The inputs' squares overflow (or underflow) f64, and their entries f32; the rows
/// carry their exponent from the first layer on.
fn extreme_input_scales_are_exact(dev: &Dev) {
    for act in [Activation::Relu, Activation::LeakyRelu(0.2), Activation::Linear] {
        let p = problem(&[16; 6], act, Cost::Quadratic, gaussian(2.0, 0.0), 8, 5, TargetSpec::Zeros);
        let r0 = dev.probe(&p, "unit scale");
        for k in [664_i32, -664] {
            let c = 2f64.powi(k);
            let q = Problem::new(p.net.clone(), p.inputs.mapv(|v| v * c), p.targets.clone()).unwrap();
            let r = dev.probe(&q, "extreme scale");
            let what = format!("{act}, inputs ×2^{k}");
            let lc = k as f64 * std::f64::consts::LOG10_2;
            assert_eq!(r.overflow_layer, None, "{what}");
            for (st, s0) in r.layers.iter().zip(&r0.layers) {
                assert_eq!(st.status, LayerStatus::Ok, "{what}: layer {}", st.layer);
                for ((name, v), (_, v0)) in st.log_fields().into_iter().zip(s0.log_fields()) {
                    let power = match name {
                        "log10_grad_w_mean" | "log10_grad_w_rms" => 2.0,
                        "log10_weight_norm" | "log10_max_dsigma" => 0.0,
                        _ => 1.0,
                    };
                    dev.close(v, v0 + power * lc, name, st.layer, 5, &what);
                }
            }
            dev.close(r.log10_cost, r0.log10_cost + 2.0 * lc, "log10_cost", 5, 5, &what);
        }
    }
}
test_device!(extreme_input_scales_are_exact, extreme_input_scales_are_exact_cpu, extreme_input_scales_are_exact_gpu);

/// Bad input is refused before any work, as an invalid argument (exit code 2, one line):
/// depths outside 1..=L, a linear output with several depths, unequal output widths; and on
/// the command line, inputs holding a NaN.
fn bad_input_is_refused_with_exit_code_2(dev: &Dev) {
    let p = problem(&[4, 5, 5, 5], Activation::Tanh, Cost::Quadratic, gaussian(1.0, 0.0), 2, 1, TargetSpec::Zeros);
    let mut lin = p.clone();
    lin.net.linear_output = true;
    let narrow = problem(&[4, 5, 3, 5], Activation::Tanh, Cost::Quadratic, gaussian(1.0, 0.0), 2, 1, TargetSpec::Zeros);
    for (q, depths, flag) in [(&p, vec![0, 2], "--depths"), (&p, vec![4], "--depths"), (&lin, vec![2, 3], "--linear-output"), (&narrow, vec![2, 3], "--depths")] {
        match dev.backend.probe_depths(q, &depths) {
            Err(e @ Error::InvalidArgument { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(flag) && !msg.contains('\n'), "{depths:?} on {}: {msg}", dev.backend.name());
            }
            other => panic!("{depths:?} on {}: expected an invalid argument, got {other:?}", dev.backend.name()),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    let mut data = ndarray::Array2::<f64>::ones((3, 4));
    data[[1, 2]] = f64::NAN;
    ndarray_npy::WriteNpyExt::write_npy(&data, std::fs::File::create(&x).unwrap()).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(["probe", "--backend", dev.backend.name(), "--width", "4", "--depth", "3", "--inputs", x.to_str().unwrap()])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "NaN inputs on {}: {err}", dev.backend.name());
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}
test_device!(bad_input_is_refused_with_exit_code_2, bad_input_is_refused_with_exit_code_2_cpu, bad_input_is_refused_with_exit_code_2_gpu);
