//! `gradscope train`: the SGD step against independent f64 computations, `--lr 0` against
//! `probe`, learning on the digits, resuming after a kill, bad input and divergence.

use std::path::{Path, PathBuf};

use gradscope::backend::cpu::{backprop_plain, cost_plain};
use gradscope::model::{Activation, Cost, TargetSpec};
use gradscope::train::sgd::{Weights, apply, gradients, log10_norm};
use ndarray::{Array1, Array2};
use ndarray_npy::WriteNpyExt;

mod common;

use common::{assert_bad, gradscope, ok, read_history, s};

fn col(name: &str) -> usize {
    gradscope::train::history::field(name)
}

fn max_rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

/// One step equals backprop written independently (the CPU engine's plain reference, per
/// example and unbatched in structure) and the update rule written out, to 1e-12 relative;
/// and the gradient equals central finite differences of the cost to 1e-6 relative (the
/// finite difference's own error at h = 1e-5 is ~h² C‴ + ε/h ≈ 1e-10 of C, so 1e-12 is out of
/// its reach; the backprop comparison carries the 1e-12).
#[test]
#[allow(clippy::needless_range_loop)]
fn one_step_equals_independent_f64_computations() {
    for (act, cost, targets) in [
        (Activation::Sigmoid, Cost::CrossEntropy, TargetSpec::Uniform),
        (Activation::Tanh, Cost::Quadratic, TargetSpec::Gaussian),
    ] {
        let p = common::problem(&[5, 4, 3, 2], act, cost, common::gaussian(1.5, 0.1), 7, 3, targets);
        let w0 = Weights::of(&p.net);
        let g = gradients(&p.net, &w0, p.inputs.view(), p.targets.view()).unwrap();
        assert!((g.cost - cost_plain(&p)).abs() <= 1e-12 * g.cost.abs(), "cost");
        let reference = backprop_plain(&p);
        for l in 0..3 {
            assert!(max_rel(&g.w[l], &reference[l].grad_w) <= 1e-12, "{act} ∂C/∂W^{}", l + 1);
            let gb = g.b[l].clone().insert_axis(ndarray::Axis(0));
            assert!(max_rel(&gb, &reference[l].grad_b.clone().insert_axis(ndarray::Axis(0))) <= 1e-12, "{act} ∂C/∂b^{}", l + 1);
        }
        // Finite differences on every weight of layer 2 and every bias of layer 1.
        let h = 1e-5;
        let (ws, bs) = common::stored(&p);
        let cost_at = |ws: Vec<Array2<f64>>, bs: Vec<Array1<f64>>| cost_plain(&common::with_params(&p, ws, bs));
        let mut worst = 0.0f64;
        let scale = g.w[1].iter().chain(g.b[0].iter()).fold(0.0f64, |m, v| m.max(v.abs()));
        for i in 0..3 {
            for j in 0..4 {
                let (mut up, mut dn) = (ws.clone(), ws.clone());
                up[1][(i, j)] += h;
                dn[1][(i, j)] -= h;
                let fd = (cost_at(up, bs.clone()) - cost_at(dn, bs.clone())) / (2.0 * h);
                worst = worst.max((fd - g.w[1][(i, j)]).abs() / scale);
            }
        }
        for i in 0..4 {
            let (mut up, mut dn) = (bs.clone(), bs.clone());
            up[0][i] += h;
            dn[0][i] -= h;
            let fd = (cost_at(ws.clone(), up) - cost_at(ws.clone(), dn)) / (2.0 * h);
            worst = worst.max((fd - g.b[0][i]).abs() / scale);
        }
        assert!(worst <= 1e-6, "{act}: finite differences differ by {worst:e} of the largest gradient");
        // The update rule, written out: W ← (1 − ηλ/n) W − η ∂C/∂W, b ← b − η ∂C/∂b.
        let (lr, l2, n) = (0.3, 2.0, 50);
        let mut w1 = w0.clone();
        let upd = apply(&mut w1, &g, lr, l2, n);
        for l in 0..3 {
            let want = &w0.w[l] * (1.0 - lr * l2 / n as f64) - &(&g.w[l] * lr);
            assert!(max_rel(&w1.w[l], &want) <= 1e-12, "W^{} after the step", l + 1);
            let want_b = &w0.b[l] - &(&g.b[l] * lr);
            assert!(w1.b[l].iter().zip(&want_b).all(|(a, b)| (a - b).abs() <= 1e-12 * b.abs().max(1e-3)), "b^{}", l + 1);
            let dw = &want - &w0.w[l];
            let direct = (dw.iter().map(|v| v * v).sum::<f64>() / w0.w[l].iter().map(|v| v * v).sum::<f64>()).sqrt().log10();
            assert!((upd[l] - direct).abs() <= 1e-9, "log10_update_w of layer {}: {} vs {direct}", l + 1, upd[l]);
        }
    }
    // The scaled norm keeps entries whose squares underflow.
    let tiny = [3e-200, 4e-200];
    assert!((log10_norm(tiny.iter()) - (5e-200f64).log10()).abs() < 1e-12);
    assert_eq!(log10_norm([0.0, 0.0].iter()), f64::NEG_INFINITY);
}

fn write_npy(path: &Path, a: &Array2<f64>) {
    a.write_npy(std::fs::File::create(path).unwrap()).unwrap();
}

/// `--lr 0` leaves every statistic constant, and each record equals `probe` on the same
/// weights and data exactly (the same engine on the same stored parameters).
#[test]
fn lr_zero_keeps_every_statistic_and_equals_probe() {
    let t = tempfile::tempdir().unwrap();
    let (x, y, w) = (t.path().join("x.npy"), t.path().join("y.npy"), t.path().join("w.npz"));
    let p = common::problem(&[6, 5, 5, 3], Activation::Tanh, Cost::Quadratic, common::gaussian(1.2, 0.05), 9, 4, TargetSpec::Gaussian);
    write_npy(&x, &p.inputs);
    write_npy(&y, &p.targets);
    ok(&["probe", "--widths", "6,5,5,3", "--activation", "tanh", "--sigma-w2", "1.2", "--sigma-b2", "0.05", "--seed", "4", "--backend", "cpu", "--save-weights", s(&w)]);
    let dir = t.path().join("run");
    ok(&["train", "--weights", s(&w), "--activation", "tanh", "--inputs", s(&x), "--targets", s(&y), "--lr", "0", "--batch", "4", "--steps", "5", "--every", "1", "--out", s(&dir), "-q"]);
    let pj = t.path().join("p.json");
    ok(&["probe", "--weights", s(&w), "--activation", "tanh", "--inputs", s(&x), "--targets", s(&y), "--backend", "cpu", "--out", s(&pj)]);
    let probe: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&pj).unwrap()).unwrap();
    let h = read_history(&dir);
    assert_eq!(h.shape(), &[6, 3, 16]);
    let fields = ["log10_grad_b_mean", "log10_grad_b_rms", "log10_grad_w_mean", "log10_grad_w_rms", "log10_weight_norm", "log10_max_dsigma", "log10_bound", "log10_bound_tight"];
    let probe_cost = probe["log10_cost"].as_f64().expect("probe's log10_cost");
    for r in 0..6 {
        for l in 0..3 {
            for f in fields {
                let want = probe["layers"][l][f].as_f64().unwrap();
                assert_eq!(h[(r, l, col(f))], want, "record {r}, layer {}, {f}", l + 1);
            }
            if r > 0 {
                assert_eq!(h[(r, l, col("log10_update_w"))], f64::NEG_INFINITY, "η = 0 moves nothing");
            }
        }
        assert_eq!(h[(r, 0, col("log10_cost"))], probe_cost);
        assert_eq!(h[(r, 0, col("log10_cost"))], h[(0, 0, col("log10_cost"))]);
    }
}

/// Cross-entropy SGD on the built-in digits cuts the cost within 50 epochs. With seed 0,
/// [64, 30, 10], η = 0.5, B = 10, the accuracy on the training set after 50 epochs is
/// 1796/1797 (±2 examples, for a different floating-point summation order).
#[test]
fn digits_cross_entropy_learns_within_50_epochs() {
    common::assert_digits_learn_within_50_epochs(&[], 2.0);
}

/// A run killed mid-way resumes from its checkpoint and ends with the same history and
/// weights, bit for bit, as a run never interrupted.
#[test]
fn killed_run_resumes_to_the_uninterrupted_result() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    let args = |d: &Path| -> Vec<String> {
        ["train", "--data", "digits", "--examples", "300", "--eval-examples", "50", "--widths", "64,16,10", "--cost", "cross-entropy", "--init", "nielsen", "--batch", "5", "--steps", "1500", "--every", "5", "--lr", "0.3", "--l2", "1", "--checkpoint-seconds", "0", "-q", "--out", s(d)]
            .iter()
            .map(|v| v.to_string())
            .collect()
    };
    common::assert_resumes_to_the_uninterrupted_result(&args, &a, &b, 3 * 10, 1500);
}

fn idx_files(dir: &Path, labels: &[u8], truncate: usize) -> (PathBuf, PathBuf) {
    let n = labels.len() as u32;
    let mut im = vec![0, 0, 8, 3];
    for v in [n, 2, 2] {
        im.extend_from_slice(&v.to_be_bytes());
    }
    im.extend((0..4 * n).map(|i| (i * 37 % 256) as u8));
    im.truncate(im.len() - truncate);
    let mut lb = vec![0, 0, 8, 1];
    lb.extend_from_slice(&n.to_be_bytes());
    lb.extend_from_slice(labels);
    let (i, l) = (dir.join(format!("im{truncate}.idx")), dir.join(format!("lb{truncate}.idx")));
    std::fs::write(&i, im).unwrap();
    std::fs::write(&l, lb).unwrap();
    (i, l)
}

#[test]
fn bad_input_gets_one_line_exit_2_and_nothing_written() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let o = s(&out);
    let digits = ["train", "--data", "digits", "--widths", "64,8,10", "--out", o];
    let with = |extra: &[&'static str]| -> Vec<&str> { digits.iter().copied().chain(extra.iter().copied()).collect() };
    assert_bad(&with(&["--lr", "-0.1"]), "--lr", &out);
    assert_bad(&with(&["--lr", "NaN"]), "--lr", &out);
    assert_bad(&with(&["--l2", "-1"]), "--l2", &out);
    assert_bad(&with(&["--batch", "5000"]), "larger than the training set (1797 examples)", &out);
    assert_bad(&with(&["--check"]), "needs --backend gpu", &out);
    assert_bad(&with(&["--every", "0"]), "--every", &out);
    assert_bad(&with(&["--examples", "5000"]), "5000 is more than the data hold", &out);
    assert_bad(&with(&["--checkpoint-seconds", "-1"]), "--checkpoint-seconds", &out);
    assert_bad(&with(&["--shuffle", "sometimes"]), "--shuffle", &out);
    // Drawn inputs or targets that the digits would silently replace.
    assert_bad(&with(&["--inputs", "sign"]), "--inputs", &out);
    assert_bad(&with(&["--targets", "gaussian"]), "--targets", &out);
    assert_bad(&["train", "--data", "digits", "--widths", "784,30,10", "--out", o], "64 features", &out);
    assert_bad(&["train", "--data", "digits", "--widths", "64,30,3", "--out", o], "10 columns", &out);
    assert_bad(&["train", "--widths", "64,30,10", "--out", o], "--data", &out);
    assert_bad(&["train", "--data", "mnist", "--widths", "64,30,10", "--out", o], "unknown data", &out);
    let (i, l) = idx_files(t.path(), &[1, 2, 12], 0);
    assert_bad(&["train", "--images", s(&i), "--labels", s(&l), "--widths", "4,3,10", "--out", o], "label 12 of example 2", &out);
    let (i, l) = idx_files(t.path(), &[1, 2, 3], 3);
    assert_bad(&["train", "--images", s(&i), "--labels", s(&l), "--widths", "4,3,10", "--out", o], "truncated", &out);
    let (i, l) = idx_files(t.path(), &[1, 2, 3], 0);
    assert_bad(&["train", "--images", s(&i), "--labels", s(&l), "--widths", "4,3,10", "--batch", "4", "--out", o], "--batch", &out);
    // A folder holding another run is refused and left as it was.
    let first = t.path().join("first");
    ok(&["train", "--data", "digits", "--widths", "64,8,10", "--steps", "2", "-q", "--out", s(&first)]);
    let before = std::fs::read(first.join("history.npy")).unwrap();
    let e = gradscope(&["train", "--data", "digits", "--widths", "64,8,10", "--steps", "3", "-q", "--out", s(&first)]);
    assert_eq!(e.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&e.stderr).contains("different training run"));
    assert_eq!(std::fs::read(first.join("history.npy")).unwrap(), before);
}

/// A diverging run stops with the step and the layer named, exit 2, and keeps the history.
#[test]
fn a_nan_cost_stops_the_run_naming_step_and_layer_and_keeps_the_history() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("run");
    let o = gradscope(&["train", "--data", "teacher:2", "--examples", "64", "--activation", "linear", "--widths", "8,8,8,2", "--lr", "50", "--batch", "64", "--steps", "500", "--every", "1", "--out", s(&dir), "-q"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains("diverged at step") && e.contains("layer"), "{e}");
    let h = read_history(&dir);
    assert!(h.shape()[0] >= 2, "the records before the divergence are kept");
    let meta = std::fs::read_to_string(dir.join("meta.json")).unwrap();
    assert!(meta.contains("diverged at step"), "{meta}");
}

/// A 100-layer sigmoid network trains, and its first layer's gradient is reported in the
/// log domain (10^-40 and below), not as 0.
#[test]
fn deep_sigmoid_network_reports_tiny_gradients_not_zero() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("run");
    let mut widths = vec!["64".to_string()];
    widths.extend(std::iter::repeat_n("16".to_string(), 99));
    widths.push("10".into());
    let w = widths.join(",");
    ok(&["train", "--data", "digits", "--examples", "100", "--widths", &w, "--init", "nielsen", "--cost", "cross-entropy", "--batch", "50", "--steps", "4", "--every", "2", "--out", s(&dir), "-q"]);
    let h = read_history(&dir);
    for r in 0..h.shape()[0] {
        let g1 = h[(r, 0, col("log10_grad_b_mean"))];
        assert!(g1.is_finite() && g1 < -40.0, "record {r}: layer 1's ‖∂C/∂b‖ = 10^{g1}");
        assert_eq!(h[(r, 0, col("status"))], 0.0, "status ok");
        if r > 0 {
            let u = h[(r, 0, col("log10_update_w"))];
            assert!(u.is_finite() && u < -30.0, "layer 1's update 10^{u}");
        }
    }
}

/// `reproduce nielsen-training`: his three networks at the five epochs, the deep pair, the
/// data labelled, and his JSON values for his three networks beside an MNIST-format run only.
#[test]
fn reproduce_nielsen_training_rows_and_labels() {
    let o = ok(&["reproduce", "nielsen-training", "--batch", "100", "--depth", "12", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3 * 5 + 2 * 4);
    assert!(v["notes"][0].as_str().unwrap().contains("NOT MNIST"), "{}", v["notes"][0]);
    assert!(rows.iter().all(|r| r["published"].is_null()), "no published value beside the digits");
    let ratio = |net: &str, epoch: u64| {
        rows.iter().find(|r| r["network"].as_str().unwrap().starts_with(net) && r["epoch"] == epoch).unwrap()["ratio_first_last"].as_f64().unwrap()
    };
    // At initialisation the first hidden layer learns slower, the more so the deeper the net.
    let (r2, r3, r4) = (ratio("[64, 30, 30, 10]", 0), ratio("[64, 30, 30, 30, 10]", 0), ratio("[64, 30, 30, 30, 30, 10]", 0));
    assert!(r4 < r3 && r3 < r2 && r2 < 1.0, "{r2} {r3} {r4}");
    // Depth 12: sigmoid's first layer is decades behind; tanh at criticality is not.
    let (sig, tanh) = (ratio("depth 12 sigmoid", 0), ratio("depth 12 tanh", 0));
    assert!(sig < 1e-5 && tanh > 1e-2, "sigmoid {sig}, tanh {tanh}");

    let t = tempfile::tempdir().unwrap();
    let n = 20u32;
    let mut im = vec![0, 0, 8, 3];
    for v in [n, 28, 28] {
        im.extend_from_slice(&v.to_be_bytes());
    }
    im.extend((0..n * 784).map(|i| (i * 7919 % 251) as u8));
    let mut lb = vec![0, 0, 8, 1];
    lb.extend_from_slice(&n.to_be_bytes());
    lb.extend((0..n).map(|i| (i % 10) as u8));
    let (i, l) = (t.path().join("im.idx"), t.path().join("lb.idx"));
    std::fs::write(&i, im).unwrap();
    std::fs::write(&l, lb).unwrap();
    let o = ok(&["reproduce", "nielsen-training", "--images", s(&i), "--labels", s(&l), "--depth", "4", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let cited: Vec<_> = rows.iter().filter(|r| !r["published"].is_null()).collect();
    assert_eq!(cited.len(), 3 * 5, "his three networks at the five epochs, nothing beside the deep pair");
    for r in &cited {
        let hidden = r["network"].as_str().unwrap().matches("30").count();
        assert_eq!(r["published"].as_array().unwrap().len(), hidden, "{}", r["network"]);
        assert_eq!(r["published"].as_array().unwrap().len(), r["grad_b_mean"].as_array().unwrap().len());
    }
    let at = |net: &str, epoch: u64| rows.iter().find(|r| r["network"] == net && r["epoch"] == epoch).unwrap()["published"].clone();
    assert_eq!(at("[784, 30, 30, 30, 10]", 0), serde_json::json!([0.011838212272121293, 0.05996519457449515, 0.28314239285488185]));
    // His file ends at entry 499 (before the 500th step); that entry stands beside our 500.
    assert_eq!(at("[784, 30, 30, 10]", 500), serde_json::json!([0.003434568507576292, 0.009630366361002016]));
    assert!(v["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("his last entry, 499")));
}

/// Nielsen's networks are fixed by his protocol: options the reproductions would silently
/// ignore are refused in one line with exit code 2.
#[test]
fn reproduce_nielsen_refuses_options_it_would_ignore() {
    let none = tempfile::tempdir().unwrap().path().join("none");
    assert_bad(&["reproduce", "nielsen-training", "--width", "8", "--batch", "5"], "--width", &none);
    assert_bad(&["reproduce", "nielsen-training", "--seeds", "3", "--batch", "5"], "--seeds", &none);
    assert_bad(&["reproduce", "nielsen", "--width", "8", "--batch", "5"], "--width", &none);
    assert_bad(&["reproduce", "nielsen", "--depth", "8", "--batch", "5"], "--depth", &none);
}
