//! A depth sweep with the prefix-shared engine (`CpuBackend::probe_depths`: one forward
//! pass to the deepest depth, one stacked backward pass) against the naive per-depth loop
//! (`CpuBackend::probe` of each depth), same results.
//!
//! `cargo bench --bench sweep` (grid log:1..300:24, width 256, batch 32, tanh: ~2 minutes
//! on 2 cores); `GRADSCOPE_SWEEP_DEPTHS=log:1..2000:64` for the JAX comparison's grid (the
//! naive loops then take minutes per run).
//!
//! - `shared`: `probe_depths` on a fresh backend (empty spectral-norm cache);
//! - `naive_fresh`: `probe` per depth, each on a fresh backend (what separate
//!   `gradscope probe` runs do: every depth draws and norms its layers again);
//! - `naive_cached`: `probe` per depth on one backend (spectral norms cached after the
//!   first depth, but every depth still draws and multiplies its layers again).

#[path = "common/mod.rs"]
mod common;

use common::*;
use gradscope::backend::CpuBackend;
use gradscope::model::{Activation, Problem};
use gradscope::stats::Report;

fn truncated(p: &Problem, d: usize) -> Problem {
    let mut q = p.clone();
    q.net.widths.truncate(d + 1);
    q
}

fn naive(cpu: Option<&CpuBackend>, p: &Problem, depths: &[usize]) -> Vec<Report> {
    depths
        .iter()
        .map(|&d| {
            let q = truncated(p, d);
            match cpu {
                Some(c) => c.probe(&q).unwrap(),
                None => CpuBackend::default().probe(&q).unwrap(),
            }
        })
        .collect()
}

/// The largest |Δ log10| over every finite field of every layer of every depth.
fn max_diff(a: &[Report], b: &[Report]) -> f64 {
    let mut m = 0.0_f64;
    for (ra, rb) in a.iter().zip(b) {
        for (x, y) in ra.layers.iter().zip(&rb.layers) {
            let fa = [x.log10_grad_b_mean, x.log10_grad_b_rms, x.log10_grad_w_mean, x.log10_grad_w_rms, x.log10_weight_norm, x.log10_max_dsigma, x.log10_bound, x.log10_bound_tight];
            let fb = [y.log10_grad_b_mean, y.log10_grad_b_rms, y.log10_grad_w_mean, y.log10_grad_w_rms, y.log10_weight_norm, y.log10_max_dsigma, y.log10_bound, y.log10_bound_tight];
            for (u, v) in fa.iter().zip(&fb) {
                if u.is_finite() || v.is_finite() {
                    m = m.max((u - v).abs());
                }
            }
        }
    }
    m
}

fn main() {
    let spec = std::env::var("GRADSCOPE_SWEEP_DEPTHS").unwrap_or_else(|_| "log:1..300:24".into());
    let depths = gradscope::sweep::grid::parse_depths(&spec).expect("GRADSCOPE_SWEEP_DEPTHS");
    let (n, b) = (256, 32);
    let top = *depths.last().unwrap();
    let p = problem(n, top, b, Activation::Tanh, 0);

    let shared = CpuBackend::default().probe_depths(&p, &depths).unwrap();
    let diff = max_diff(&shared, &naive(None, &p, &depths));

    let mut c = criterion();
    let gname = format!("sweep/w{n}_b{b}");
    let mut g = group(&mut c, &gname);
    bench(&mut g, &gname, "shared", || {
        std::hint::black_box(CpuBackend::default().probe_depths(&p, &depths).unwrap());
    });
    bench(&mut g, &gname, "naive_fresh", || {
        std::hint::black_box(naive(None, &p, &depths));
    });
    bench(&mut g, &gname, "naive_cached", || {
        let cpu = CpuBackend::default();
        std::hint::black_box(naive(Some(&cpu), &p, &depths));
    });
    g.finish();
    c.final_summary();

    let layers: usize = depths.iter().sum();
    println!();
    println!("Depth sweep, CPU backend, {} — load average at the end: {}", cpu_name(), loadavg());
    println!("grid {spec}: {} depths, deepest {top}, Σ depths = {layers} layers; width {n}, batch {b}, tanh, σ_w² = 1", depths.len());
    let sh = seconds(&gname, "shared");
    let row = |name: &str, t: Option<f64>| {
        let ratio = match (t, sh) {
            (Some(t), Some(s)) => format!("{:6.2}×", t / s),
            _ => "–".into(),
        };
        println!("  {name:<40} {:>9} s   {ratio} the shared engine's time", opt(t, 3));
    };
    row("prefix-shared engine (probe_depths)", sh);
    row("naive loop, fresh backend per depth", seconds(&gname, "naive_fresh"));
    row("naive loop, one backend (norms cached)", seconds(&gname, "naive_cached"));
    println!("  same results: max |Δ log10| over all fields, layers and depths = {diff:.1e} decades");
}
