//! The measured forward signal (`log10_q`, `c`) of the probe engines: equal to the plain
//! forward pass, at q* on a wide tanh net, beside its predictions, and in the outputs.

mod common;

use std::process::Command;

use gradscope::backend::cpu::forward_plain;
use gradscope::backend::CpuBackend;
use gradscope::model::{Activation, Cost, TargetSpec};
use gradscope::theory::meanfield::MeanField;
use gradscope::theory::{self, signal::c_noise};

use common::*;

#[test]
fn the_cpu_signal_equals_a_plain_forward_pass() {
    // Bounded, smooth and homogeneous σ; relu at σ_w² = 3 grows z by ~2^0.3 per layer, so
    // the engine's carried exponents are non-zero and must cancel/add exactly.
    // Tanh at σ_w² = 1e200 has |z| ~ 1e100: G_xx G_x'x' alone would overflow to ∞ (c = 0).
    for (act, sw2, sb2) in [(Activation::Tanh, 1.5, 0.1), (Activation::Relu, 3.0, 0.0), (Activation::Sigmoid, 4.0, 0.5), (Activation::Tanh, 1e200, 0.0)] {
        let p = problem(&[7, 9, 8, 9, 6, 5], act, Cost::Quadratic, gaussian(sw2, sb2), 4, 3, TargetSpec::Zeros);
        let r = CpuBackend::default().probe(&p).unwrap();
        let f = forward_plain(&p);
        assert_eq!(r.signal.len(), 5);
        assert!(r.signal_unmeasured.is_none());
        for l in 1..=5 {
            let z = &f[l].0;
            let (q, c) = (theory::log10_q_measured(z.view()), theory::c_measured(z.dot(&z.t()).view()));
            let s = r.signal[l - 1];
            assert!((s.log10_q - q).abs() < 1e-12, "{act:?} layer {l}: log10_q {} against {q}", s.log10_q);
            assert!((s.c - c).abs() < 1e-12 && s.c != 0.0, "{act:?} layer {l}: c {} against {c}", s.c);
        }
    }
    // One example: no pair, so c is NaN while q is measured.
    let p = problem(&[5, 6, 4], Activation::Tanh, Cost::Quadratic, gaussian(1.0, 0.05), 1, 1, TargetSpec::Zeros);
    let r = CpuBackend::default().probe(&p).unwrap();
    assert!(r.signal.iter().all(|s| s.c.is_nan() && s.log10_q.is_finite()));
}

#[test]
fn the_signal_is_exact_where_z_leaves_f64s_range() {
    // Linear σ at σ_w² = 2^20 multiplies ‖z‖² by ~2^20 per layer: past layer ~52 the plain
    // ‖z‖² is beyond f64, yet log10 q must grow by log10 σ_w² per layer (to the sampling
    // spread of one layer, small at width 64 but not zero: compare differences of 60 layers).
    let p = problem(&[64; 81], Activation::Linear, Cost::Quadratic, gaussian(2f64.powi(20), 0.0), 3, 5, TargetSpec::Zeros);
    let r = CpuBackend::default().probe(&p).unwrap();
    let q: Vec<f64> = r.signal.iter().map(|s| s.log10_q).collect();
    assert!(q.iter().all(|v| v.is_finite()), "{q:?}");
    assert!(q[79] > 400.0, "log10 q^80 = {}: beyond f64 (10^308)", q[79]);
    let per_layer = (q[79] - q[19]) / 60.0;
    assert!((per_layer - 20.0 * std::f64::consts::LOG10_2).abs() < 0.05, "{per_layer} decades per layer");
    // The Gram's correlation is scale-free: still in [−1, 1].
    assert!(r.signal.iter().all(|s| s.c.abs() <= 1.0 + 1e-12));
}

#[test]
fn the_probe_measures_q_star_and_follows_c_predicted_on_a_wide_tanh_net() {
    // Issue 13's done-when: tanh, σ_w² = 1, σ_b² = 0.05, width 1000. One layer's q averages
    // z² over n units, with a relative sampling sd ≈ √(2/n) = 0.045 that persists over
    // ~ξ_q layers; the mean over layers 11..20 (well past ξ_q = 1.75) is held to 2√(2/n).
    // One pair's correlation fluctuates by up to 1/√n; per layer 3/√n (`c_noise`).
    let (width, depth) = (1000, 20);
    let p = problem(&vec![width; depth + 1], Activation::Tanh, Cost::Quadratic, gaussian(1.0, 0.05), 4, 11, TargetSpec::Zeros);
    let r = CpuBackend::default().probe(&p).unwrap();
    let q_star = MeanField::new(Activation::Tanh, 1.0, 0.05).unwrap().q_star();
    assert!((q_star - 0.19359).abs() < 5e-6);
    let tol = (2.0 / width as f64).sqrt();
    let late: Vec<f64> = r.signal[10..].iter().map(|s| 10f64.powf(s.log10_q)).collect();
    let q_late = late.iter().sum::<f64>() / late.len() as f64;
    assert!((q_late / q_star - 1.0).abs() < 2.0 * tol, "mean q over layers 11..20 = {q_late} against q* = {q_star}");
    let cp = theory::c_predicted(&p).unwrap();
    let qp = theory::log10_q_predicted(&p).unwrap();
    for (l, s) in r.signal.iter().enumerate() {
        assert!((s.c - cp[l]).abs() < c_noise(width), "layer {}: c = {}, predicted {}", l + 1, s.c, cp[l]);
        assert!((10f64.powf(s.log10_q - qp[l]) - 1.0).abs() < 4.0 * tol, "layer {}: q {} against {}", l + 1, s.log10_q, qp[l]);
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gradscope")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap()
}

#[test]
fn probe_json_and_csv_carry_the_signal_and_xi_c_measured() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("p.json");
    let base = ["probe", "--backend", "cpu", "--activation", "tanh", "--sigma-w2", "1", "--sigma-b2", "0.05", "--width", "300", "--depth", "25", "--batch", "4"];
    let o = run(&[&base[..], &["--out", json.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("xi_c_measured = "), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let layers = v["layers"].as_array().unwrap();
    for st in layers {
        for k in ["log10_q", "log10_q_predicted", "c", "c_predicted"] {
            assert!(st[k].is_f64(), "{k} missing in {st}");
        }
    }
    let mf = &v["mean_field"];
    let xi = mf["xi_c"].as_f64().unwrap();
    let xm = mf["xi_c_measured"].as_f64().unwrap_or_else(|| panic!("{mf}"));
    assert!((xm / xi - 1.0).abs() < 0.5, "xi_c_measured {xm} against ξ_c {xi}");
    assert!(v.get("signal_unmeasured").is_none());
    let csv = dir.path().join("p.csv");
    let o = run(&[&base[..], &["--out", csv.to_str().unwrap()]].concat());
    assert!(o.status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    let head: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = text.lines().nth(25).unwrap().split(',').collect();
    let col = |k: &str| head.iter().position(|h| *h == k).unwrap_or_else(|| panic!("{k} not in {head:?}"));
    let (q_json, q_csv): (f64, f64) = (layers[24]["log10_q"].as_f64().unwrap(), row[col("log10_q")].parse().unwrap());
    assert_eq!(q_json, q_csv);
    assert!(row[col("c_predicted")].parse::<f64>().unwrap() > 0.9);
}

#[cfg(feature = "gpu")]
#[test]
fn the_gpu_says_it_does_not_measure_the_signal() {
    let Some(g) = gpu("the_gpu_says_it_does_not_measure_the_signal") else { return };
    let p = problem(&[6, 8, 8, 5], Activation::Tanh, Cost::Quadratic, gaussian(1.0, 0.05), 3, 2, TargetSpec::Zeros);
    let r = g.probe(&p).unwrap();
    assert_eq!(r.signal_unmeasured, Some("not measured on this backend"));
    assert!(r.signal.len() == 3 && r.signal.iter().all(|s| s.log10_q.is_nan() && s.c.is_nan()));
}

#[test]
fn sweep_profiles_carry_the_measured_q_and_c() {
    use ndarray_npy::ReadNpyExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let o = run(&["sweep", "-o", out.to_str().unwrap(), "--backend", "cpu", "--activations", "tanh", "--sigma-w2", "1", "--sigma-b2", "0.05", "--widths", "12", "--depths", "3,5", "--batch", "3", "-q"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |f: &str| ndarray::Array2::<f64>::read_npy(std::fs::File::open(out.join("profiles").join(format!("{f}.npy"))).unwrap()).unwrap();
    let (q, c) = (read("log10_q"), read("c"));
    assert_eq!(q.dim(), (2, 5));
    // The depth-5 row equals a probe of that network; the depth-3 row is NaN-padded.
    let p = problem(&[12; 6], Activation::Tanh, Cost::Quadratic, gaussian(1.0, 0.05), 3, 0, TargetSpec::Zeros);
    let r = CpuBackend::default().probe(&p).unwrap();
    let row = (0..2).find(|&i| q[(i, 4)].is_finite()).expect("a depth-5 row");
    for l in 0..5 {
        assert!((q[(row, l)] - r.signal[l].log10_q).abs() < 1e-12 && (c[(row, l)] - r.signal[l].c).abs() < 1e-12, "layer {}", l + 1);
    }
    assert!(q[(1 - row, 4)].is_nan() && q[(1 - row, 2)].is_finite());
    // The predictions beside them: the probe's own maps, layer by layer, in both rows.
    let (qp, cp) = (read("log10_q_predicted"), read("c_predicted"));
    let (want_q, want_c) = (gradscope::theory::signal::log10_q_predicted(&p).unwrap(), gradscope::theory::signal::c_predicted(&p).unwrap());
    for l in 0..5 {
        assert!((qp[(row, l)] - want_q[l]).abs() < 1e-12 && (cp[(row, l)] - want_c[l]).abs() < 1e-12, "predicted, layer {}", l + 1);
    }
    for l in 0..3 {
        assert!((qp[(1 - row, l)] - want_q[l]).abs() < 1e-12 && (cp[(1 - row, l)] - want_c[l]).abs() < 1e-12, "prefix row, layer {}", l + 1);
    }
    assert!(qp[(1 - row, 4)].is_nan() && cp[(1 - row, 4)].is_nan() && cp[(row, 4)].is_finite());
}

#[test]
fn the_shared_signal_prediction_equals_the_two_apart() {
    // signal_predicted (the sweep's path) iterates the examples' lengths once for both
    // profiles, and runs c_predicted's pairs on several threads: the same bits as
    // log10_q_predicted and c_predicted called apart. Tanh takes the vectorised rule; the
    // sigmoid the scalar one; 8 examples give more pairs than one thread would get.
    for act in [Activation::Tanh, Activation::Sigmoid] {
        let p = problem(&[6, 7, 7, 7, 7, 7, 7, 7], act, Cost::Quadratic, gaussian(1.3, 0.05), 8, 2, TargetSpec::Zeros);
        let (q, c) = theory::signal::signal_predicted(&p).unwrap();
        assert_eq!(q, theory::log10_q_predicted(&p).unwrap(), "{act:?}");
        assert_eq!(c, theory::c_predicted(&p).unwrap(), "{act:?}");
        assert!(c.iter().all(|v| v.is_finite() && v.abs() <= 1.0), "{act:?}: {c:?}");
    }
}
