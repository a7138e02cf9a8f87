//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use gradscope::model::{Activation, Cost, Init, InitKind, InputSpec, Network, Params, Problem, StoredParams, TargetSpec};
use ndarray::Array3;
use ndarray_npy::ReadNpyExt;

/// A generated problem: widths, activation, cost, init (σ_w², σ_b²), batch, seed.
pub fn problem(widths: &[usize], act: Activation, cost: Cost, init: Init, batch: usize, seed: u64, targets: TargetSpec) -> Problem {
    let net = Network::new(widths.to_vec(), act, false, cost, Params::Generated { init, seed }).unwrap();
    let x = InputSpec::Gaussian.materialise(seed, batch, widths[0]).unwrap();
    let y = targets.materialise(seed, batch, *widths.last().unwrap()).unwrap();
    Problem::new(net, x, y).unwrap()
}

pub fn gaussian(sw2: f64, sb2: f64) -> Init {
    Init::new(InitKind::Gaussian, Some(sw2), Some(sb2)).unwrap()
}

/// The same problem with its parameters materialised as stored arrays (to perturb them).
pub fn stored(p: &Problem) -> (Vec<ndarray::Array2<f64>>, Vec<ndarray::Array1<f64>>) {
    let mut w = Vec::new();
    let mut b = Vec::new();
    for l in 1..=p.net.depth() {
        let (wl, bl) = p.net.layer(l);
        w.push(wl.into_owned());
        b.push(bl.into_owned());
    }
    (w, b)
}

pub fn with_params(p: &Problem, w: Vec<ndarray::Array2<f64>>, b: Vec<ndarray::Array1<f64>>) -> Problem {
    let net = Network::new(
        p.net.widths.clone(),
        p.net.activation,
        p.net.linear_output,
        p.net.cost,
        Params::Stored(Arc::new(StoredParams { w, b, source: "test".into() })),
    )
    .unwrap();
    Problem::new(net, p.inputs.clone(), p.targets.clone()).unwrap()
}

/// Asserts |a − b| ≤ tol for log10 values, with context; both −∞ counts as equal.
pub fn assert_log_close(a: f64, b: f64, tol: f64, what: &str) {
    if a == f64::NEG_INFINITY && b == f64::NEG_INFINITY {
        return;
    }
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b} (|Δ| = {:e} > {tol:e})", (a - b).abs());
}

/// The GPU the tests run on, or None (a loud skip) when there is no adapter; with
/// GRADSCOPE_REQUIRE_GPU=1 (set by .ci/run) a missing adapter fails the test instead.
#[cfg(feature = "gpu")]
pub fn gpu(test: &str) -> Option<gradscope::backend::gpu::GpuBackend> {
    use gradscope::backend::gpu::{GpuBackend, GpuOptions};
    match GpuBackend::new(&GpuOptions { adapter: None, allow_software: true }) {
        Ok(g) => {
            eprintln!("{test}: on {}", g.device_name());
            Some(g)
        }
        Err(e) => {
            if std::env::var("GRADSCOPE_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("{test}: GRADSCOPE_REQUIRE_GPU=1 but no GPU adapter: {e}");
            }
            eprintln!("\n*** {test}: SKIPPED: no GPU adapter ({e}) ***\n");
            None
        }
    }
}

// ---- The binary, as the CLI tests run it ----

/// Runs the gradscope binary (lavapipe's XDG_RUNTIME_DIR noise silenced).
pub fn gradscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradscope")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap()
}

/// Runs it and returns stdout, failing the test on a non-zero exit.
pub fn ok(args: &[&str]) -> String {
    let o = gradscope(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// DIR/history.npy of a train run.
pub fn read_history(dir: &Path) -> Array3<f64> {
    Array3::<f64>::read_npy(std::fs::File::open(dir.join("history.npy")).unwrap()).unwrap()
}

/// Exit 2, one line naming `needle` (clap's usage errors excepted), and nothing at `dir`.
pub fn assert_bad(args: &[&str], needle: &str, dir: &Path) {
    let o = gradscope(args);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: exit {:?}, stderr {e}", o.status.code());
    assert!(e.contains(needle), "{args:?}: stderr lacks '{needle}': {e}");
    if !e.contains("Usage:") {
        assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: more than one line: {e}");
    }
    assert!(!dir.exists(), "{args:?}: wrote {}", dir.display());
}

/// A train run `args(b)` killed once its history.csv has more than `lines` lines, then run again,
/// resumes from its checkpoint (mid-run: before step `total`) and ends with the same
/// history and weights, bit for bit, as `args(a)` never interrupted.
pub fn assert_resumes_to_the_uninterrupted_result(args: &dyn Fn(&Path) -> Vec<String>, a: &Path, b: &Path, lines: usize, total: u64) {
    let run = |d: &Path| {
        let v = args(d);
        ok(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    run(a);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradscope")).args(args(b)).env("XDG_RUNTIME_DIR", "/tmp").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let csv = b.join("history.csv");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&csv).map(|s| s.lines().count()).unwrap_or(0) <= lines && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run(b);
    let line = out.lines().find(|l| l.starts_with("resuming")).unwrap_or_else(|| panic!("no resume line: {out}"));
    let step: u64 = line.split("at step ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(step > 0 && step < total, "killed at step {step}: the kill should land mid-run");
    for f in ["history.npy", "history.csv", "checkpoint.npz"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f}");
    }
}

/// 1796 of the 1797 training digits after 50 epochs of the run below (seed 0; measured on the
/// f64 CPU engine).
pub const PINNED_DIGITS_ACCURACY: f64 = 1796.0 / 1797.0;

/// Cross-entropy SGD on the built-in digits ([64, 30, 10], nielsen init, η = 0.5, B = 10,
/// 50 epochs, seed 0, with `extra` flags) cuts the cost by more than a decade, and the
/// training-set accuracy lands within `examples` examples of [`PINNED_DIGITS_ACCURACY`].
pub fn assert_digits_learn_within_50_epochs(extra: &[&str], examples: f64) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("run");
    let mut args = vec!["train", "--data", "digits", "--widths", "64,30,10", "--init", "nielsen", "--cost", "cross-entropy", "--lr", "0.5", "--batch", "10", "--epochs", "50", "--every", "1800", "--out", s(&dir), "-q"];
    args.extend_from_slice(extra);
    ok(&args);
    let h = read_history(&dir);
    let col = |name: &str| gradscope::train::history::field(name);
    let last = h.shape()[0] - 1;
    assert_eq!(h[(last, 0, col("epoch"))], 50.0);
    let (c0, c1) = (h[(0, 0, col("log10_cost"))], h[(last, 0, col("log10_cost"))]);
    assert!(c1 < c0 - 1.0, "the cost fell from 10^{c0} to only 10^{c1}");
    let acc = h[(last, 0, col("accuracy"))];
    eprintln!("digits {extra:?}, 50 epochs: cost 10^{c0} → 10^{c1}, accuracy {acc}");
    assert!((acc - PINNED_DIGITS_ACCURACY).abs() <= examples / 1797.0, "accuracy {acc}, pinned {PINNED_DIGITS_ACCURACY}");
}

