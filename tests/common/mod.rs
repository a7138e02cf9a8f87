//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use gradscope::model::{Activation, Cost, Init, InitKind, InputSpec, Network, Params, Problem, StoredParams, TargetSpec};

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
